package model

import (
	"fmt"
	"io"
	"strings"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/tasks"
)

// Describe writes a readable, stable description of a graph: every task
// with its owner, phase, dependencies and wanted content. Golden files and
// `nodeup plan --graph`-style debugging use it.
func Describe(w io.Writer, g *engine.Graph) {
	for _, id := range g.IDs() {
		t, _ := g.Get(id)
		fmt.Fprintf(w, "== %s (builder %s, phase %s)\n", id, g.Owner(id), t.Phase())
		if deps := t.Deps(); len(deps) > 0 {
			fmt.Fprintf(w, "deps: %s\n", strings.Join(deps, ", "))
		}
		switch t := t.(type) {
		case *tasks.File:
			fmt.Fprintf(w, "mode %04o owner %d:%d\n", t.Mode, t.Owner.UID, t.Owner.GID)
			content(w, string(t.Content))
		case *tasks.Service:
			fmt.Fprintf(w, "inputs: %s\n", strings.Join(t.Inputs, ", "))
			if t.NoStart {
				fmt.Fprintln(w, "never started by nodeup")
			}
			if t.RestartOnly {
				fmt.Fprintln(w, "restarted by nodeup only when running")
			}
			content(w, t.Content)
		case *tasks.Sysctl:
			content(w, string(t.Content()))
		case *tasks.KernelModules:
			content(w, string(t.Content()))
		case *tasks.Install:
			fmt.Fprintf(w, "from asset %s member %q mode %04o\n", t.Asset.Name, t.Member, t.Mode)
		case *tasks.Asset:
			fmt.Fprintf(w, "sha256 %s extract %t\n", t.SHA256, t.Extract)
			for _, u := range t.URLs {
				fmt.Fprintf(w, "url %s\n", u)
			}
		case *tasks.Kubeconfig:
			fmt.Fprintf(w, "server %s user %s groups %v ca %s\n", t.Server, t.User, t.Groups, t.CA)
		case *tasks.BootstrapKubeconfig:
			fmt.Fprintf(w, "server %s bootstrap token of cluster %s ca %s (public certificate)\n", t.Server, t.Cluster, t.CA)
		case *tasks.CACertFile:
			fmt.Fprintf(w, "public certificate of ca %s\n", t.CA)
		case *tasks.BootstrapToken:
			fmt.Fprintf(w, "bootstrap token of cluster %s (create if absent)\n", t.Cluster)
		case *tasks.ImageImport:
			fmt.Fprintf(w, "import asset %s with %s into containerd at %s\n", t.Asset.Name, t.Ctr, t.Socket)
		case *tasks.Certificate:
			r := t.Request
			fmt.Fprintf(w, "key %s ca %s cn %s groups %v usage %s dns %v ips %v\n", t.KeyPath, t.CA, r.CommonName, r.Organization, r.Usage, r.DNSNames, r.IPs)
		case *tasks.CAFiles:
			fmt.Fprintf(w, "ca %s key %q\n", t.CA, t.KeyPath)
		case *tasks.SigningKeyFiles:
			fmt.Fprintf(w, "signing key %s public %s\n", t.Name, t.PubPath)
		case *tasks.Packages:
			fmt.Fprintf(w, "packages: %s\n", strings.Join(t.Names, " "))
		}
	}
}

func content(w io.Writer, s string) {
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		fmt.Fprintf(w, "| %s\n", l)
	}
}
