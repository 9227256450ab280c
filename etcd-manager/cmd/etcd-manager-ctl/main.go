// Command etcd-manager-ctl reads and writes the etcd-manager control area of the state store.
package main

import (
	"os"

	"github.com/kopsnode/agents/pkg/cli"
)

func main() {
	app := &cli.App{Name: "etcd-manager-ctl", Summary: "read and write the etcd-manager control area of the state store"}
	os.Exit(app.Main())
}
