// Command etcd-manager forms and runs an etcd cluster with its peers.
package main

import (
	"os"

	"github.com/kopsnode/agents/pkg/cli"
)

func main() {
	app := &cli.App{Name: "etcd-manager", Summary: "form and run an etcd cluster with its peers"}
	os.Exit(app.Main())
}
