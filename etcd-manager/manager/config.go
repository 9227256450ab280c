// Package manager is etcd-manager itself: one instance per node and etcd
// cluster. Each instance persists its identity, serves its peers over mutual
// TLS, supervises its local etcd process, and takes part in a leader
// election through a lease in the state store. The leader converges the etcd
// cluster on the spec in the store's control area: it creates the cluster
// (fenced by a create-if-absent write), adds idle peers as learners and
// promotes them, removes dead or surplus members without losing quorum, and
// lets replaced nodes with empty disks rejoin under their identity.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/pkg/paths"
	"github.com/kopsnode/agents/pkg/store"
)

// Config configures one etcd-manager instance.
type Config struct {
	// ClusterName is the Kubernetes cluster (top-level folder of the store).
	ClusterName string
	// EtcdCluster is "main" or "events".
	EtcdCluster string
	// ID is the instance identity and etcd member name: the member slot of
	// the volume mounted at DataDir (identity.FromVolume). Required;
	// state.json must agree.
	ID string
	// DataDir holds state.json, the etcd data (etcd/) and certificates (pki/).
	DataDir string
	// BinDirRoot holds v<version>/etcd for every installed etcd version.
	BinDirRoot string
	// Address is this node's IP address: listened on and advertised.
	Address string
	// PeerPort, ClientPort, ManagerPort are etcd's and the manager's ports.
	PeerPort, ClientPort, ManagerPort int
	// DNSSuffix names members etcd-<id>.<suffix>; default "internal.<cluster>".
	DNSSuffix string
	// AdvertiseNames advertises etcd URLs by name (needs DNS or the hosts
	// file) instead of by address.
	AdvertiseNames bool
	// ExtraSANs are more IP addresses or names put into this instance's
	// certificates: etcd checks a peer's client certificate against the
	// address the connection comes from, which on a test host with all
	// members on loopback is 127.0.0.1.
	ExtraSANs []string
	// HostsFile, when set, gets a managed block with every peer's name.
	HostsFile string
	// LocalClientAddress, when set and not Address itself, is a second
	// address etcd serves clients on, at ClientPort: 127.0.0.1 in
	// production, where the local kube-apiserver connects (etcd's serving
	// certificate names 127.0.0.1). It is not advertised.
	LocalClientAddress string
	// Seed, when set, is written as the control spec when the store has
	// none (create-if-absent, never overwriting): the node configuration's
	// member count and version. etcd-manager-ctl changes the spec after.
	Seed *control.Spec
	// APIServerClientCertDir, when set, receives the client certificate
	// kube-apiserver uses to talk to etcd: etcd-client.crt, etcd-client.key
	// (mode 0600) and etcd-ca.crt (the CA of etcd's serving certificates).
	// It is kept valid and rotated like the members' certificates, without
	// restarting etcd. Must be an absolute path.
	APIServerClientCertDir string

	Store     store.Store
	Discovery discovery.Discovery

	// Tick is the reconcile interval; LeaseDuration the leader lease,
	// renewed by its holder and observed by the others every quarter of it.
	Tick          time.Duration
	LeaseDuration time.Duration
	// PeerTimeout bounds one peer call.
	PeerTimeout time.Duration
	// DeadMemberThreshold is how long a member must be unhealthy before it
	// is removed to make room for a replacement.
	DeadMemberThreshold time.Duration
	// CertValidity is the lifetime of issued certificates; RenewBefore how
	// long before expiry they are reissued (etcd restarted one member at a
	// time).
	CertValidity time.Duration
	RenewBefore  time.Duration

	// Commands run queued commands by kind. The manager handles
	// control.KindBackupNow itself; a command of a kind not here stays
	// queued. Each command runs at most once: the leader claims it
	// with a create-if-absent write first (a leader that dies after the
	// claim leaves the command claimed and unfinished, with no result).
	Commands map[string]CommandFunc

	// Backups configures the leader's full backups.
	Backups BackupConfig

	// EtcdLogLevel is passed to etcd.
	EtcdLogLevel string
	// MetricsRegistry receives the manager's metrics; optional.
	MetricsRegistry prometheus.Registerer
	Logger          *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// CommandFunc runs one queued command on the leader.
type CommandFunc func(ctx context.Context, c control.Command) error

// DefaultConfig returns production defaults for an etcd cluster name.
// Tick, LeaseDuration and PeerTimeout give a new leader within 10 s of the
// leader's machine dying: the lease is free 6 s after its last renewal was
// seen (renewed and observed every 1.5 s) and a dead peer delays one 2 s
// gather (docs/etcd-manager.md, Leader election and failover).
func DefaultConfig(clusterName, etcdCluster string) Config {
	c := Config{
		ClusterName:         clusterName,
		EtcdCluster:         etcdCluster,
		BinDirRoot:          paths.EtcdBinDirRoot,
		PeerPort:            2380,
		ClientPort:          4001,
		ManagerPort:         3994,
		Tick:                2 * time.Second,
		LeaseDuration:       6 * time.Second,
		PeerTimeout:         2 * time.Second,
		DeadMemberThreshold: 5 * time.Minute,
		CertValidity:        365 * 24 * time.Hour,
		RenewBefore:         60 * 24 * time.Hour,
		EtcdLogLevel:        "info",
		LocalClientAddress:  "127.0.0.1",
		Backups:             DefaultBackupConfig(),
	}
	if etcdCluster == "events" {
		c.PeerPort, c.ClientPort, c.ManagerPort = 2381, 4002, 3995
	}
	return c
}

// Validate returns every problem, naming the field.
func (c Config) Validate() error {
	var errs []error
	if err := (control.Layout{Cluster: c.ClusterName, EtcdCluster: c.EtcdCluster}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := identity.ValidateID(c.ID); err != nil {
		errs = append(errs, fmt.Errorf("id: %w (the member slot of the volume at the data directory)", err))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("dataDir: empty"))
	}
	if c.BinDirRoot == "" {
		errs = append(errs, errors.New("binDirRoot: empty"))
	}
	if net.ParseIP(c.Address) == nil {
		errs = append(errs, fmt.Errorf("address: %q is not an IP address", c.Address))
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"peerPort", c.PeerPort}, {"clientPort", c.ClientPort}, {"managerPort", c.ManagerPort}} {
		if p.v <= 0 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("%s: %d is not a port", p.name, p.v))
		}
	}
	if c.LocalClientAddress != "" && net.ParseIP(c.LocalClientAddress) == nil {
		errs = append(errs, fmt.Errorf("localClientAddress: %q is not an IP address", c.LocalClientAddress))
	}
	if c.Seed != nil {
		if err := c.Seed.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("seed: %w", err))
		}
	}
	if c.APIServerClientCertDir != "" && !filepath.IsAbs(c.APIServerClientCertDir) {
		errs = append(errs, fmt.Errorf("apiServerClientCertDir: %q is not an absolute path", c.APIServerClientCertDir))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("store: none"))
	}
	if err := c.Backups.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Discovery == nil {
		errs = append(errs, errors.New("discovery: none"))
	}
	if c.Tick <= 0 {
		errs = append(errs, errors.New("tick: must be positive"))
	}
	if c.LeaseDuration < 2*c.Tick {
		errs = append(errs, fmt.Errorf("leaseDuration: %s must be at least twice tick (%s)", c.LeaseDuration, c.Tick))
	}
	if c.PeerTimeout <= 0 {
		errs = append(errs, errors.New("peerTimeout: must be positive"))
	} else if 2*c.PeerTimeout > c.LeaseDuration {
		// A holder acts for half a lease after a renewal began; a peer
		// call begun then must end before another instance can take it.
		errs = append(errs, fmt.Errorf("peerTimeout: %s must be at most half leaseDuration (%s)", c.PeerTimeout, c.LeaseDuration))
	}
	if c.CertValidity < time.Hour {
		errs = append(errs, fmt.Errorf("certValidity: %s is shorter than 1h", c.CertValidity))
	}
	if c.RenewBefore <= 0 || c.RenewBefore >= c.CertValidity {
		errs = append(errs, fmt.Errorf("renewBefore: %s must be positive and shorter than certValidity", c.RenewBefore))
	}
	return errors.Join(errs...)
}

func (c Config) layout() control.Layout {
	return control.Layout{Cluster: c.ClusterName, EtcdCluster: c.EtcdCluster}
}

func (c Config) dnsSuffix() string {
	if c.DNSSuffix != "" {
		return c.DNSSuffix
	}
	return "internal." + c.ClusterName
}

// MemberName is the DNS name of member id: etcd-<id>.<suffix>.
func (c Config) MemberName(id string) string { return "etcd-" + id + "." + c.dnsSuffix() }
