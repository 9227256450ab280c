package model_test

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/app"
	"github.com/kopsnode/agents/etcd-manager/runconfig"
	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/render"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/releases"
	"github.com/kopsnode/agents/protokube/etcdvolumes"
	"github.com/kopsnode/agents/protokube/gossipd"
	"github.com/kopsnode/agents/protokube/manifests"
	units "github.com/kopsnode/agents/systemd-units"
)

// daemonConfig is what a daemon's command does with its arguments before it
// starts anything: bind its flags on a fresh FlagSet, parse, and validate.
// configFiles are the local files the daemon loads at start (nodeup's
// configuration copies), checked the way the daemon loads them.
type daemonConfig interface {
	AddFlags(fs *flag.FlagSet)
	Validate() error
}

// contract is one subcommand of a daemon binary.
type contract struct {
	// command is the binary's command of that name, so the table cannot
	// drift from what the binary dispatches.
	command string
	// fresh returns the command's configuration at its defaults and the
	// configuration files it names once parsed.
	fresh func() (daemonConfig, func() []string)
}

// contracts are the daemons nodeup writes units for, by binary and
// subcommand. A unit of one of these binaries with a subcommand not listed
// here fails the test: a new daemon unit brings its contract.
var contracts = map[string]map[string]contract{
	units.ProtokubeBin: {
		"gossip": {gossipd.GossipCommand().Name, func() (daemonConfig, func() []string) {
			c := gossipd.DefaultConfig()
			return &c, func() []string { return nil }
		}},
		"etcd-volumes": {etcdvolumes.Command().Name, func() (daemonConfig, func() []string) {
			c := etcdvolumes.DefaultConfig()
			return &c, func() []string { return []string{c.ConfigFile} }
		}},
		"manifests": {manifests.Command().Name, func() (daemonConfig, func() []string) {
			c := manifests.DefaultConfig()
			return &c, func() []string { return []string{c.ConfigFile} }
		}},
	},
	units.EtcdManagerBin: {
		"run": {etcdManagerRun(), etcdManagerContract},
	},
}

// exampleConfigs are every example node configuration: the files in
// examples/nodeup, and the node configurations `nodeup render` writes for
// examples/cluster.yaml, as written and in kubenet mode (which adds the
// pod network to protokube gossip on every node). Rendering is done without
// a mirror: the plan takes made-up hashes, as in render's own tests.
func exampleConfigs(t *testing.T) map[string]*config.NodeConfig {
	t.Helper()
	out := map[string]*config.NodeConfig{}
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "nodeup", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example node configurations: %v", err)
	}
	for _, f := range files {
		n, err := config.LoadNodeConfigFile(f)
		if err != nil {
			t.Fatalf("example %s: %v", f, err)
		}
		out[filepath.Base(f)] = n
	}
	path := filepath.Join("..", "..", "examples", "cluster.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kubenet := strings.Replace(string(data), "    mode: cni\n    provider: bridge\n", "    mode: kubenet\n", 1)
	if kubenet == string(data) {
		t.Fatalf("%s: networking block not found to make the kubenet variant", path)
	}
	for variant, d := range map[string][]byte{"cluster.yaml": data, "cluster.yaml(kubenet)": []byte(kubenet)} {
		c, in, err := render.Prepare(d, path, releases.Table(), "dev")
		if err != nil {
			t.Fatalf("%s: %v", variant, err)
		}
		in.SHA256 = map[string]string{}
		for _, f := range append(in.Files, releases.NodeupFile(in.KopsnodeVersion)) {
			in.SHA256[f.Path] = strings.Repeat("1", 64)
		}
		p, err := render.BuildPlan(c, in)
		if err != nil {
			t.Fatalf("%s: %v", variant, err)
		}
		for _, g := range p.Groups {
			// As nodeup apply reads it from the store.
			n, err := config.ParseNodeConfig(g.Data, variant+"/"+g.Name)
			if err != nil {
				t.Fatalf("%s group %s: nodeup refuses the rendered configuration: %v", variant, g.Name, err)
			}
			out[variant+"/"+g.Name] = n
		}
	}
	return out
}

// execStart returns a unit's ExecStart arguments, program first.
func execStart(content string) []string {
	for _, l := range strings.Split(content, "\n") {
		if rest, ok := strings.CutPrefix(l, "ExecStart="); ok {
			return units.SplitExecLine(rest)
		}
	}
	return nil
}

// checkUnits parses every daemon unit of a graph back with the daemon's own
// flags and validates it, and loads the configuration files it names from
// the files the same graph writes. It returns every problem and the number
// of daemon units checked.
func checkUnits(g *engine.Graph) (int, error) {
	written := map[string][]byte{}
	for _, id := range g.IDs() {
		if f, ok := mustGet(g, id).(*tasks.File); ok {
			written[f.Path] = f.Content
		}
	}
	var errs []error
	checked := 0
	for _, id := range g.IDs() {
		svc, ok := mustGet(g, id).(*tasks.Service)
		if !ok {
			continue
		}
		args := execStart(svc.Content)
		cmds, ok := contracts[firstOr(args)]
		if !ok {
			continue // not one of our daemons (kubelet, containerd, nodeup, ...)
		}
		if len(args) < 2 {
			errs = append(errs, fmt.Errorf("%s: ExecStart %q has no subcommand", svc.Name, args))
			continue
		}
		ct, ok := cmds[args[1]]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %s %s has no contract in this test", svc.Name, args[0], args[1]))
			continue
		}
		if ct.command != args[1] {
			errs = append(errs, fmt.Errorf("%s: %s's command is named %q, the unit runs %q", svc.Name, args[0], ct.command, args[1]))
			continue
		}
		checked++
		cfg, files := ct.fresh()
		fs := flag.NewFlagSet(args[1], flag.ContinueOnError)
		fs.SetOutput(new(strings.Builder))
		cfg.AddFlags(fs)
		if err := fs.Parse(args[2:]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s %s refuses its flags %q: %w", svc.Name, args[0], args[1], args[2:], err))
			continue
		}
		if fs.NArg() > 0 {
			errs = append(errs, fmt.Errorf("%s: stray arguments %q", svc.Name, fs.Args()))
		}
		if err := cfg.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s %s does not validate %q: %w", svc.Name, args[0], args[1], args[2:], err))
		}
		for _, f := range files() {
			data, ok := written[f]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: reads %s, which nodeup does not write", svc.Name, f))
				continue
			}
			if _, err := config.ParseNodeConfig(data, f); err != nil {
				errs = append(errs, fmt.Errorf("%s: the configuration copy it loads does not parse: %w", svc.Name, err))
			}
		}
	}
	return checked, errors.Join(errs...)
}

func mustGet(g *engine.Graph, id string) engine.Task {
	t, _ := g.Get(id)
	return t
}

func firstOr(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// contractInput is the builders' input for a configuration, with complete
// store settings so every store flag is rendered.
func contractInput(n *config.NodeConfig) *model.Input {
	return &model.Input{Config: n, StoreURL: "s3://state/clusters", StoreEndpoint: "http://127.0.0.1:9000", StoreRegion: "eu-west-1", StorePathStyle: true,
		Group: n.Metadata.Name, Hostname: "node-1", NodeAddress: netip.MustParseAddr("10.0.0.10")}
}

// A configuration nodeup accepts never yields a daemon unit that cannot
// start: every example configuration goes through nodeup's builders, and
// each rendered unit of protokube and etcd-manager parses back with the
// daemon's own flags, validates, and finds the configuration copy it loads.
func TestExamplesYieldUnitsThatStart(t *testing.T) {
	configs := exampleConfigs(t)
	names := make([]string, 0, len(configs))
	for name := range configs {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			g, err := model.Build(contractInput(configs[name]))
			if err != nil {
				t.Fatalf("nodeup's builders refuse the configuration: %v", err)
			}
			n, err := checkUnits(g)
			if err != nil {
				t.Error(err)
			}
			for _, id := range g.IDs() {
				if svc, ok := mustGet(g, id).(*tasks.Service); ok {
					if a := execStart(svc.Content); len(a) > 1 && contracts[a[0]] != nil {
						seen[a[0]+" "+a[1]] = true
					}
				}
			}
			t.Logf("%d daemon units checked", n)
		})
	}
	// Every contract is exercised by some example, so none is dead.
	for bin, cmds := range contracts {
		for sub := range cmds {
			if !seen[bin+" "+sub] {
				t.Errorf("no example configuration renders a %s %s unit", bin, sub)
			}
		}
	}
}

// The check fails on a broken unit: a configuration whose rendered gossip
// flags the daemon refuses (a DNS listen address nodeup passes through
// unchecked) is reported with the unit and the flag.
func TestContractCheckFailsOnBrokenUnit(t *testing.T) {
	n, err := config.LoadNodeConfigFile(filepath.Join("..", "..", "examples", "nodeup", "control-plane.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	in := contractInput(n)
	g, err := model.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	task, ok := g.Get("unit:protokube.service")
	if !ok {
		t.Fatal("no protokube.service")
	}
	svc := task.(*tasks.Service)
	args := execStart(svc.Content)
	broken := units.Protokube(append(args[1:], "--dns-listen=not-an-address", "--no-such-flag")).Render()
	svc.Content = broken
	_, err = checkUnits(g)
	if err == nil || !strings.Contains(err.Error(), "protokube.service") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("a unit with an unknown flag passed the check: %v", err)
	}
	svc.Content = units.Protokube(append(args[1:], "--dns-listen=not-an-address")).Render()
	_, err = checkUnits(g)
	if err == nil || !strings.Contains(err.Error(), "--dns-listen") {
		t.Fatalf("a unit with an invalid flag value passed the check: %v", err)
	}
}

// etcdManagerContract is `etcd-manager run`: runconfig.Config, which the
// command parses (it loads no configuration file).
func etcdManagerContract() (daemonConfig, func() []string) {
	c := runconfig.DefaultConfig()
	return &c, func() []string { return nil }
}

// etcdManagerRun is the name of etcd-manager's run command, looked up in
// the binary's command list.
func etcdManagerRun() string {
	for _, c := range app.EtcdManager().Commands {
		if c.Name == "run" {
			return c.Name
		}
	}
	return "(no run command)"
}
