// Command etcd-manager forms and runs an etcd cluster with its peers.
package main

import (
	"os"

	"github.com/kopsnode/agents/etcd-manager/app"
)

func main() { os.Exit(app.EtcdManager().Main()) }
