// Command protokube mounts etcd volumes, runs etcd-manager and serves gossip DNS.
package main

import (
	"os"

	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/protokube/gossipd"
)

func main() {
	app := &cli.App{
		Name:     "protokube",
		Summary:  "control-plane agent: etcd volumes, etcd-manager and gossip DNS",
		Commands: []*cli.Command{gossipd.GossipCommand(), gossipd.StatusCommand()},
	}
	os.Exit(app.Main())
}
