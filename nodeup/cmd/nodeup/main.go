// Command nodeup converges a node from the state store.
package main

import (
	"os"

	"github.com/kopsnode/agents/nodeup/app"
)

func main() {
	os.Exit(app.NewApp(app.DefaultStoreOpener).Main())
}
