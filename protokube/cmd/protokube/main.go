// Command protokube mounts etcd volumes, runs etcd-manager and serves gossip DNS.
package main

import (
	"os"

	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/protokube/etcdvolumes"
	"github.com/kopsnode/agents/protokube/gossipd"
	"github.com/kopsnode/agents/protokube/gossipkeys"
	"github.com/kopsnode/agents/protokube/manifests"
)

func app() *cli.App {
	return &cli.App{
		Name:     "protokube",
		Summary:  "control-plane agent: etcd volumes, etcd-manager, gossip DNS and system manifests",
		Commands: []*cli.Command{gossipd.GossipCommand(), gossipd.StatusCommand(), gossipkeys.Command(), etcdvolumes.Command(), manifests.Command(), manifests.StatusCommand()},
	}
}

func main() { os.Exit(app().Main()) }
