// Command nodeup converges a node from the state store.
package main

import (
	"os"

	"github.com/kopsnode/agents/pkg/cli"
)

func main() {
	app := &cli.App{Name: "nodeup", Summary: "converge this node from the state store"}
	os.Exit(app.Main())
}
