// Command etcd-manager-ctl reads and writes the etcd-manager control area of the state store.
package main

import (
	"os"

	"github.com/kopsnode/agents/etcd-manager/app"
)

func main() { os.Exit(app.EtcdManagerCtl().Main()) }
