// Command protokube mounts etcd volumes, runs etcd-manager and serves gossip DNS.
package main

import (
	"os"

	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/protokube/etcdvolumes"
	"github.com/kopsnode/agents/protokube/gossipd"
	"github.com/kopsnode/agents/protokube/gossipkeys"
)

func app() *cli.App {
	return &cli.App{
		Name:     "protokube",
		Summary:  "control-plane agent: etcd volumes, etcd-manager and gossip DNS",
		Commands: []*cli.Command{gossipd.GossipCommand(), gossipd.StatusCommand(), gossipkeys.Command(), etcdvolumes.Command()},
	}
}

func main() { os.Exit(app().Main()) }
