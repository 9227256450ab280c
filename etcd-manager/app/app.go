// Package app holds the commands of the etcd-manager and etcd-manager-ctl
// binaries, so that their mains stay thin and the commands are testable.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/nodeaddr"
	"github.com/kopsnode/agents/pkg/observe"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// EtcdManager returns the etcd-manager binary.
func EtcdManager() *cli.App {
	return &cli.App{
		Name:     "etcd-manager",
		Summary:  "form and run an etcd cluster with its peers",
		Commands: []*cli.Command{runCommand(), statusCommand()},
	}
}

// DefaultMetricsAddr is where `run` serves /healthz, /metrics and /status
// for an etcd cluster, and where `status` asks.
func DefaultMetricsAddr(etcdCluster string) string {
	if etcdCluster == "events" {
		return "127.0.0.1:3992"
	}
	return "127.0.0.1:3991"
}

type runFlags struct {
	cfg         manager.Config
	seedMembers int
	seedVersion string
	store       storeurl.Settings
	discovery   string
	peers       string
	metricsAddr string
	extraSANs   string
	backupStore string
	log         logging.Options
}

func (f *runFlags) bind(fs *flag.FlagSet) {
	d := manager.DefaultConfig("", "main")
	f.cfg = d
	fs.StringVar(&f.cfg.ClusterName, "cluster-name", "", "Kubernetes cluster name (top-level folder in the store); required")
	fs.StringVar(&f.cfg.EtcdCluster, "etcd-cluster", "main", "etcd cluster name: main or events (sets port defaults)")
	fs.StringVar(&f.cfg.ID, "id", "", "instance identity and etcd member name (default: the member slot in the volume identity file at the root of --data-dir, which protokube etcd-volumes writes)")
	fs.StringVar(&f.cfg.DataDir, "data-dir", "", "data directory (state.json, etcd/, pki/); required")
	fs.StringVar(&f.cfg.BinDirRoot, "etcd-bin-dir-root", d.BinDirRoot, "directory with one v<version>/etcd per installed etcd version")
	fs.StringVar(&f.cfg.Address, "address", "", "this node's IP address, listened on and advertised (default: the source address of the default route)")
	fs.IntVar(&f.cfg.PeerPort, "peer-port", 0, "etcd peer port (default 2380 main, 2381 events)")
	fs.IntVar(&f.cfg.ClientPort, "client-port", 0, "etcd client port (default 4001 main, 4002 events)")
	fs.IntVar(&f.cfg.ManagerPort, "manager-port", 0, "etcd-manager peer protocol port (default 3994 main, 3995 events)")
	fs.StringVar(&f.cfg.DNSSuffix, "dns-suffix", "", "members are named etcd-<id>.<suffix> (default internal.<cluster-name>)")
	fs.BoolVar(&f.cfg.AdvertiseNames, "advertise-names", false, "advertise etcd URLs by member name instead of address (needs DNS or --hosts-file)")
	fs.StringVar(&f.cfg.HostsFile, "hosts-file", "", "keep the members' names in a managed block of this hosts file (for example /etc/hosts)")
	fs.StringVar(&f.cfg.APIServerClientCertDir, "apiserver-client-cert-dir", "", "keep kube-apiserver's etcd client certificate in this directory: etcd-client.crt, etcd-client.key, etcd-ca.crt (default: none)")
	fs.StringVar(&f.cfg.LocalClientAddress, "local-client-address", d.LocalClientAddress, "etcd also serves clients on this address at the client port, for the local kube-apiserver (empty: only --address)")
	fs.IntVar(&f.seedMembers, "seed-members", 0, "member count written as the cluster spec when the store has none (with --seed-etcd-version; never overwrites a spec)")
	fs.StringVar(&f.seedVersion, "seed-etcd-version", "", "etcd version written as the cluster spec when the store has none (with --seed-members)")
	fs.StringVar(&f.extraSANs, "extra-sans", "", "comma-separated extra IP addresses or names for this instance's certificates")
	f.store.AddFlags(fs) // --store (required), --store-endpoint, --store-region, --store-path-style
	fs.StringVar(&f.discovery, "discovery", "store", "peer discovery: store (registry in the state store) or static")
	fs.StringVar(&f.peers, "peers", "", "static peers as id=host:port,... (with --discovery static)")
	fs.DurationVar(&f.cfg.Tick, "tick", d.Tick, "reconcile interval")
	fs.DurationVar(&f.cfg.LeaseDuration, "lease-duration", d.LeaseDuration, "leader lease duration")
	fs.DurationVar(&f.cfg.PeerTimeout, "peer-timeout", d.PeerTimeout, "timeout of one peer call")
	fs.DurationVar(&f.cfg.DeadMemberThreshold, "dead-member-threshold", d.DeadMemberThreshold, "how long a member must be down before a waiting peer replaces it")
	fs.DurationVar(&f.cfg.Backups.Interval, "backup-interval", d.Backups.Interval, "interval of the leader's scheduled full backups (0: none; backups before membership changes and backup-now still run)")
	fs.DurationVar(&f.cfg.Backups.VerifyInterval, "verify-interval", d.Backups.VerifyInterval, "interval of the leader's verification of the newest backup by a test restore into a throwaway etcd (0: only after restores)")
	fs.StringVar(&f.backupStore, "backup-store", "", "store URL the backups go to, with the --store settings (default: the state store)")
	fs.DurationVar(&f.cfg.Backups.DeltaInterval, "delta-interval", d.Backups.DeltaInterval, "the most a change waits before the leader writes it in a delta segment of the backup store (point-in-time recovery; 0: no deltas)")
	fs.IntVar(&f.cfg.Backups.Retention.HourlyDays, "backup-retention-hourly-days", d.Backups.Retention.HourlyDays, "keep one full backup per hour for this many days (everything from the last hour is always kept)")
	fs.IntVar(&f.cfg.Backups.Retention.DailyDays, "backup-retention-daily-days", d.Backups.Retention.DailyDays, "keep one full backup per day for this many days")
	fs.StringVar(&f.cfg.EtcdLogLevel, "etcd-log-level", d.EtcdLogLevel, "etcd's --log-level")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "listen address of /healthz, /metrics and /status (default 127.0.0.1:3991 main, 127.0.0.1:3992 events)")
	f.log.AddFlags(fs)
}

// seedSpec builds the seed spec from --seed-members and
// --seed-etcd-version: both or neither.
func seedSpec(members int, version string) (*control.Spec, error) {
	switch {
	case members == 0 && version == "":
		return nil, nil
	case members == 0 || version == "":
		return nil, errors.New("--seed-members and --seed-etcd-version go together")
	}
	s := &control.Spec{MemberCount: members, EtcdVersion: version}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("--seed-members, --seed-etcd-version: %w", err)
	}
	return s, nil
}

// ParsePeers parses "id=host:port,...".
func ParsePeers(s string) (discovery.Static, error) {
	var out discovery.Static
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		p := discovery.Peer{ID: id, ManagerAddr: addr}
		if !ok {
			return nil, fmt.Errorf("--peers: entry %d %q is not id=host:port", i, part)
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("--peers: entry %d %q: %w", i, part, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func runCommand() *cli.Command {
	f := &runFlags{}
	return &cli.Command{
		Name:    "run",
		Summary: "run the manager of one etcd cluster on this node",
		Flags:   f.bind,
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q: %w", args, cli.ErrUsage)
			}
			logger, err := logging.New(env.Stderr, f.log)
			if err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			cfg := f.cfg
			if cfg.ID == "" && cfg.DataDir != "" {
				// One member identity: the slot of the volume mounted here.
				if cfg.ID, err = identity.FromVolume(cfg.DataDir, cfg.ClusterName, cfg.EtcdCluster); err != nil {
					return err
				}
			}
			def := manager.DefaultConfig(cfg.ClusterName, cfg.EtcdCluster)
			if cfg.PeerPort == 0 {
				cfg.PeerPort = def.PeerPort
			}
			if cfg.ClientPort == 0 {
				cfg.ClientPort = def.ClientPort
			}
			if cfg.ManagerPort == 0 {
				cfg.ManagerPort = def.ManagerPort
			}
			if cfg.Address == "" {
				ip, err := nodeaddr.Primary()
				if err != nil {
					return fmt.Errorf("--address not given and %w", err)
				}
				cfg.Address = ip.String()
				logger.Info("using the default route's source address", "address", cfg.Address)
			}
			if f.extraSANs != "" {
				cfg.ExtraSANs = strings.Split(f.extraSANs, ",")
			}
			seed, err := seedSpec(f.seedMembers, f.seedVersion)
			if err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			cfg.Seed = seed
			if f.store.URL == "" {
				return fmt.Errorf("--store is required: %w", cli.ErrUsage)
			}
			if err := f.store.Validate(); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			opts, err := f.store.Options()
			if err != nil {
				return err
			}
			opts.Logger = logger
			st, err := storeurl.Open(ctx, f.store.URL, opts)
			if err != nil {
				return fmt.Errorf("--store: %w", err)
			}
			defer st.Close()
			cfg.Store = st
			if f.backupStore != "" {
				bst, err := storeurl.Open(ctx, f.backupStore, opts)
				if err != nil {
					return fmt.Errorf("--backup-store: %w", err)
				}
				defer bst.Close()
				cfg.Backups.Store = bst
			}
			layoutPeers := fmt.Sprintf("%s/backups/etcd/%s/control/peers/", cfg.ClusterName, cfg.EtcdCluster)
			switch f.discovery {
			case "store":
				cfg.Discovery = discovery.NewStoreRegistry(st, layoutPeers, 4*cfg.LeaseDuration, nil)
			case "static":
				peers, err := ParsePeers(f.peers)
				if err != nil {
					return fmt.Errorf("%v: %w", err, cli.ErrUsage)
				}
				cfg.Discovery = peers
			default:
				return fmt.Errorf("--discovery: %q is not store or static: %w", f.discovery, cli.ErrUsage)
			}
			reg := observe.NewRegistry()
			cfg.MetricsRegistry = reg
			cfg.Logger = logger
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			m, err := manager.Start(ctx, cfg)
			if err != nil {
				return err
			}
			addr := f.metricsAddr
			if addr == "" {
				addr = DefaultMetricsAddr(cfg.EtcdCluster)
			}
			obs, err := observe.Start(observe.Config{
				Addr: addr, Registry: reg, Logger: logger, Health: m.Health,
				Status: func(ctx context.Context) (any, error) { return m.Status(ctx) },
			})
			if err != nil {
				_ = m.Close()
				return err
			}
			<-ctx.Done()
			logger.Info("shutting down")
			return errors.Join(obs.Close(), m.Close())
		},
	}
}

func statusCommand() *cli.Command {
	var addr, out, etcdCluster string
	return &cli.Command{
		Name:    "status",
		Summary: "show the etcd cluster as the local etcd-manager sees it",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&addr, "addr", "", "the manager's metrics address (default by --etcd-cluster)")
			fs.StringVar(&etcdCluster, "etcd-cluster", "main", "etcd cluster name, for the default address")
			fs.StringVar(&out, "o", "text", "output format: text or json")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if addr == "" {
				addr = DefaultMetricsAddr(etcdCluster)
			}
			st, err := FetchStatus(ctx, addr)
			if err != nil {
				return err
			}
			return cli.Print(env.Stdout, out, st, func(w io.Writer) error { return PrintStatus(w, st) })
		},
	}
}

// FetchStatus reads http://addr/status.
func FetchStatus(ctx context.Context, addr string) (manager.Status, error) {
	var st manager.Status
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := observe.FetchStatus(ctx, nil, addr, "etcd-manager run", &st)
	return st, err
}

// PrintStatus writes the human form of a status.
func PrintStatus(w io.Writer, st manager.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	role := "follower"
	if st.IsLeader {
		role = "leader"
	}
	fmt.Fprintf(tw, "instance:\t%s (%s)\n", st.ID, role)
	fmt.Fprintf(tw, "etcd cluster:\t%s\n", st.EtcdCluster)
	fmt.Fprintf(tw, "leader:\t%s (term %d)\n", orDash(st.Leader), st.LeaderTerm)
	if st.Spec != nil {
		fmt.Fprintf(tw, "spec:\t%d members, etcd %s\n", st.Spec.MemberCount, st.Spec.EtcdVersion)
	} else {
		fmt.Fprintf(tw, "spec:\t-\n")
	}
	if st.EtcdVersion != "" {
		fmt.Fprintf(tw, "running version:\t%s\n", st.EtcdVersion)
	}
	etcd := "not running"
	if st.Local.EtcdRunning {
		etcd = "running, unhealthy"
		if st.Local.EtcdHealthy {
			etcd = "running, healthy"
		}
		if st.Local.EtcdLearner {
			etcd += ", learner"
		}
	}
	fmt.Fprintf(tw, "local etcd:\t%s\n", etcd)
	if !st.LastReconcile.IsZero() {
		fmt.Fprintf(tw, "last reconcile:\t%s ago\n", time.Since(st.LastReconcile).Round(time.Second))
	}
	if st.LastError != "" {
		fmt.Fprintf(tw, "last error:\t%s\n", st.LastError)
	}
	if b := st.Backups; b != nil {
		last := "none known"
		if g := b.LastGood; g != nil {
			last = fmt.Sprintf("%s (%s ago, revision %d)", g.Name, time.Since(g.Started).Round(time.Second), g.Revision)
		}
		fmt.Fprintf(tw, "last backup:\t%s\n", last)
		if b.LastError != "" {
			fmt.Fprintf(tw, "backup error:\t%s: %s\n", b.FailureReason, b.LastError)
		}
		if !b.NextScheduled.IsZero() {
			fmt.Fprintf(tw, "next backup:\t%s (every %s, to %s)\n", b.NextScheduled.UTC().Format(time.RFC3339), b.Interval, b.Store)
		}
	}
	if d := st.Deltas; d != nil {
		rpo := "not following"
		if d.Following {
			rpo = fmt.Sprintf("%.1fs (durable as of %s)", d.RPOSeconds, d.DurableAsOf.UTC().Format(time.RFC3339Nano))
		}
		fmt.Fprintf(tw, "deltas:\tlast durable revision %d, RPO %s, chain of %d segment(s) from %s (every %s)\n", d.LastDurableRevision, rpo, d.ChainLength, d.ChainBase, d.Interval)
		if d.LastError != "" {
			fmt.Fprintf(tw, "delta error:\t%s: %s\n", d.FailureReason, d.LastError)
		}
	}
	printRetentionQuorum(tw, st)
	if a := st.APIServerClientCert; a != nil {
		cert := "none yet"
		if a.Serial != "" {
			cert = fmt.Sprintf("%s, serial %s, expires %s (in %s)", a.CommonName, a.Serial, a.NotAfter.UTC().Format(time.RFC3339), time.Until(a.NotAfter).Round(time.Second))
		}
		fmt.Fprintf(tw, "apiserver client cert:\t%s: %s\n", a.Dir, cert)
		if a.Error != "" {
			fmt.Fprintf(tw, "apiserver cert error:\t%s\n", a.Error)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Members) > 0 {
		fmt.Fprintln(w, "\nMEMBERS")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tID\tHEALTHY\tLEARNER\tPEER URLS")
		for _, m := range st.Members {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\n", orDash(m.Name), m.ID, m.Healthy, m.Learner, strings.Join(m.PeerURLs, ","))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nPEERS")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tETCD\tHEALTHY\tDATA\tVERSION")
	for _, p := range st.Peers {
		data := "yes"
		if p.DataDirEmpty {
			data = "empty"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\t%s\n", p.ID, p.ManagerAddr, p.EtcdRunning, p.EtcdHealthy, data, orDash(p.EtcdVersion))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
