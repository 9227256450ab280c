package runconfig

import (
	"flag"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/flagargs"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// full changes every field from its default.
func full() Config {
	return Config{
		ClusterName: "example.k8s.local", EtcdCluster: "events", ID: "events-2", DataDir: "/mnt/etcd/events",
		BinDirRoot: "/opt/etcd2", Address: "10.0.0.12", PeerPort: 2381, ClientPort: 4002, ManagerPort: 3995,
		DNSSuffix: "internal.example", AdvertiseNames: true, HostsFile: "/etc/hosts", APIServerClientCertDir: "/etc/kubernetes/pki/etcd",
		LocalClientAddress: "", SeedMembers: 3, SeedEtcdVersion: "3.6.16", ExtraSANs: []string{"10.0.0.99", "etcd.example"},
		Store:     storeurl.Settings{URL: "s3://state/clusters", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1", PathStyle: true},
		Discovery: []string{DiscoveryGossip, DiscoveryAWSVolumes, DiscoveryStore, DiscoveryStatic}, Peers: "events-1=10.0.0.11:3995", GossipAddr: "127.0.0.1:4993",
		AWS:  config.AWSVolumeSpec{Region: "eu-west-1", EC2Endpoint: "http://127.0.0.1:4566", IMDSEndpoint: "http://127.0.0.1:4567"},
		Tick: 3 * time.Second, LeaseDuration: 9 * time.Second, PeerTimeout: 4 * time.Second, DeadMemberThreshold: time.Minute,
		BackupInterval: time.Hour, VerifyInterval: 2 * time.Hour, DeltaInterval: 7 * time.Second, BackupStore: "gs://backups/etcd",
		RetentionHourlyDays: 2, RetentionDailyDays: 30, EtcdLogLevel: "debug", MetricsAddr: "127.0.0.1:4992",
		Log: logging.Options{Format: "json", Level: "debug"},
	}
}

// Args is the exact inverse of AddFlags, for the defaults and for a
// configuration with every field set, which sets every flag.
func TestArgsRoundTrip(t *testing.T) {
	for name, c := range map[string]Config{"defaults": DefaultConfig(), "full": full()} {
		t.Run(name, func(t *testing.T) {
			got := DefaultConfig()
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			got.AddFlags(fs)
			if err := fs.Parse(c.Args()); err != nil {
				t.Fatalf("%q: %v", c.Args(), err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("%q parsed to\n%+v, want\n%+v", c.Args(), got, c)
			}
			if u := flagargs.Unset(fs); name == "full" && len(u) > 0 {
				t.Errorf("Args does not render flags %q", u)
			}
		})
	}
	if err := full().Validate(); err != nil {
		t.Fatalf("the full configuration does not validate: %v", err)
	}
}

// Validate names the flag of every problem.
func TestValidateNamesFlags(t *testing.T) {
	c := DefaultConfig()
	c.EtcdCluster, c.BinDirRoot, c.Address, c.PeerPort = "a/b", "opt/etcd", "nope", 70000
	c.SeedMembers, c.Store.Endpoint = 3, "ftp://x"
	c.Discovery, c.GossipAddr = []string{"gossip", "dns", "static", "gossip", "aws-volumes"}, "nowhere"
	c.AWS.EC2Endpoint, c.AWS.IMDSEndpoint = "ec2.example", "ftp://imds"
	c.Tick, c.DeltaInterval, c.RetentionDailyDays, c.MetricsAddr = 0, -time.Second, -1, "x"
	c.Log.Level = "loud"
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"--cluster-name", "--data-dir", "--etcd-bin-dir-root", "--address", "--peer-port", "--seed-members and --seed-etcd-version",
		"--store: required", `"dns" is not`, "--peers: required", "named twice", "--gossip-addr", "--aws-ec2-endpoint", "--aws-imds-endpoint", "--tick", "--delta-interval", "--backup-retention", "--metrics-addr", "--log-level"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

// The lease's safety bound: the lease at least twice the tick, a peer call
// at most half the lease.
func TestValidateLeaseBounds(t *testing.T) {
	for _, tc := range []struct {
		tick, lease, peer time.Duration
		want              string
	}{
		{2 * time.Second, 6 * time.Second, 2 * time.Second, ""},
		{2 * time.Second, 6 * time.Second, 3 * time.Second, ""},
		{2 * time.Second, 6 * time.Second, 4 * time.Second, "--peer-timeout: 4s must be at most half --lease-duration (6s)"},
		{4 * time.Second, 6 * time.Second, time.Second, "--lease-duration: 6s must be at least twice --tick (4s)"},
	} {
		c := DefaultConfig()
		c.ClusterName, c.EtcdCluster, c.DataDir, c.Store.URL = "c", "main", "/var/lib/etcd", "file:///s"
		c.Tick, c.LeaseDuration, c.PeerTimeout = tc.tick, tc.lease, tc.peer
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s/%s/%s: %v", tc.tick, tc.lease, tc.peer, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s/%s/%s: %v, want %q", tc.tick, tc.lease, tc.peer, err, tc.want)
		}
		// The manager checks the same bound (its configuration here has
		// no store or discovery, which it reports too).
		m, err := c.Manager()
		if err != nil {
			t.Fatal(err)
		}
		if merr := m.Validate(); strings.Contains(fmt.Sprint(merr), "peerTimeout") != strings.Contains(tc.want, "--peer-timeout") {
			t.Errorf("%s/%s/%s: the manager's own check says %v", tc.tick, tc.lease, tc.peer, merr)
		}
	}
}

// Manager carries every flag into the manager's configuration, and the
// etcd cluster's port defaults where no port is given.
func TestManagerConfig(t *testing.T) {
	c := full()
	m, err := c.Manager()
	if err != nil {
		t.Fatal(err)
	}
	if m.ClusterName != c.ClusterName || m.EtcdCluster != "events" || m.ID != c.ID || m.DataDir != c.DataDir || m.BinDirRoot != c.BinDirRoot ||
		m.Address != c.Address || m.PeerPort != 2381 || m.ClientPort != 4002 || m.ManagerPort != 3995 || m.DNSSuffix != c.DNSSuffix ||
		!m.AdvertiseNames || m.HostsFile != c.HostsFile || m.APIServerClientCertDir != c.APIServerClientCertDir || m.LocalClientAddress != "" ||
		!reflect.DeepEqual(m.ExtraSANs, c.ExtraSANs) || m.Seed == nil || m.Seed.MemberCount != 3 || m.Seed.EtcdVersion != "3.6.16" ||
		m.Tick != c.Tick || m.LeaseDuration != c.LeaseDuration || m.PeerTimeout != c.PeerTimeout || m.DeadMemberThreshold != c.DeadMemberThreshold ||
		m.Backups.Interval != c.BackupInterval || m.Backups.VerifyInterval != c.VerifyInterval || m.Backups.DeltaInterval != c.DeltaInterval ||
		m.Backups.Retention.HourlyDays != 2 || m.Backups.Retention.DailyDays != 30 || m.EtcdLogLevel != "debug" {
		t.Fatalf("manager configuration %+v from %+v", m, c)
	}
	d := DefaultConfig()
	d.EtcdCluster = "events"
	if m, err = d.Manager(); err != nil || m.PeerPort != 2381 || m.ClientPort != 4002 || m.ManagerPort != 3995 || m.Seed != nil {
		t.Fatalf("events defaults: %+v, %v", m, err)
	}
}

func TestSeedSpecFlags(t *testing.T) {
	seed := func(members int, version string) Config {
		c := DefaultConfig()
		c.SeedMembers, c.SeedEtcdVersion = members, version
		return c
	}
	if s, err := seed(0, "").SeedSpec(); s != nil || err != nil {
		t.Fatalf("no seed flags: %v, %v", s, err)
	}
	if s, err := seed(3, "3.6.16").SeedSpec(); err != nil || s.MemberCount != 3 || s.EtcdVersion != "3.6.16" {
		t.Fatalf("seed: %+v, %v", s, err)
	}
	for _, c := range []struct {
		members int
		version string
		want    string
	}{
		{3, "", "go together"},
		{0, "3.6.16", "go together"},
		{2, "3.6.16", "memberCount: 2"},
		{3, "3.4.23", `"3.4.23" is not a supported etcd version`},
	} {
		if _, err := seed(c.members, c.version).SeedSpec(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("seed %d, %q: %v, want an error containing %q", c.members, c.version, err, c.want)
		}
	}
}
