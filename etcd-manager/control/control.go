// Package control reads and writes the etcd-manager control area of the state
// store: the desired cluster spec, the created marker that fences cluster
// creation, the leader lease, the peer registry and queued commands.
//
// Layout, below <cluster>/backups/etcd/<etcd-cluster>/control/:
//
//	etcd-cluster-spec      desired member count and etcd version (JSON)
//	etcd-cluster-created   written once, create-if-absent, by the leader that created the cluster
//	leader                 the leader lease (compare-and-swap)
//	peers/<id>             registry records of the instances (discovery "store")
//	commands/<id>          queued commands; commands/<id>.claimed fences execution
//	slots/<slot>           member slot leases: which machine holds each slot (package volumes/slots)
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store"
)

// Layout names the keys of one etcd cluster's control area.
type Layout struct {
	// Cluster is the Kubernetes cluster name (the store's top-level folder).
	Cluster string
	// EtcdCluster is the etcd cluster name: "main", "events".
	EtcdCluster string
}

// Validate checks the names are usable as key segments.
func (l Layout) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"cluster", l.Cluster}, {"etcd cluster", l.EtcdCluster}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s name is empty", f.name))
		} else if strings.ContainsAny(f.v, "/\\ \t\n") || f.v == "." || f.v == ".." {
			errs = append(errs, fmt.Errorf("%s name %q may not contain slashes or spaces", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// BackupsPrefix is <cluster>/backups/etcd/<etcd-cluster>.
func (l Layout) BackupsPrefix() string { return path.Join(l.Cluster, "backups", "etcd", l.EtcdCluster) }

// Prefix is the control folder.
func (l Layout) Prefix() string { return path.Join(l.BackupsPrefix(), "control") }

// SpecKey is the desired spec.
func (l Layout) SpecKey() string { return path.Join(l.Prefix(), "etcd-cluster-spec") }

// CreatedKey is the created marker.
func (l Layout) CreatedKey() string { return path.Join(l.Prefix(), "etcd-cluster-created") }

// LeaderKey is the leader lease.
func (l Layout) LeaderKey() string { return path.Join(l.Prefix(), "leader") }

// PeersPrefix is the folder of peer registry records.
func (l Layout) PeersPrefix() string { return path.Join(l.Prefix(), "peers") + "/" }

// PeerKey is one instance's registry record.
func (l Layout) PeerKey(id string) string { return path.Join(l.Prefix(), "peers", id) }

// SlotsPrefix is the folder of member slot leases (package volumes/slots).
func (l Layout) SlotsPrefix() string { return path.Join(l.Prefix(), "slots") + "/" }

// SlotKey is one member slot's lease: which machine holds the slot.
func (l Layout) SlotKey(slot string) string { return path.Join(l.Prefix(), "slots", slot) }

// CommandsPrefix is the folder of queued commands.
func (l Layout) CommandsPrefix() string { return path.Join(l.Prefix(), "commands") + "/" }

// PKIPrefix is where the cluster's CAs live: <cluster>/pki.
func (l Layout) PKIPrefix() string { return path.Join(l.Cluster, "pki") }

// ErrNoSpec is returned when the control area has no spec yet.
var ErrNoSpec = errors.New("no etcd cluster spec in the control area")

// ErrAlreadyCreated is returned when a cluster was already created: the
// create-if-absent write of the created marker lost.
var ErrAlreadyCreated = errors.New("etcd cluster already created")

// Spec is the desired state of the etcd cluster.
type Spec struct {
	// MemberCount is the desired number of voting members: 1, 3 or 5.
	MemberCount int `json:"memberCount"`
	// EtcdVersion is the etcd version to run, such as "3.6.16".
	EtcdVersion string `json:"etcdVersion"`
}

// Validate returns every problem, naming the field.
func (s Spec) Validate() error {
	var errs []error
	switch s.MemberCount {
	case 1, 3, 5:
	default:
		errs = append(errs, fmt.Errorf("memberCount: %d is not one of 1, 3, 5", s.MemberCount))
	}
	if err := config.ValidateEtcdVersion(s.EtcdVersion); err != nil {
		errs = append(errs, fmt.Errorf("etcdVersion: %w", err))
	}
	return errors.Join(errs...)
}

// Quorum is the number of voting members needed for a majority of n.
func Quorum(n int) int { return n/2 + 1 }

func readJSON(ctx context.Context, st store.Store, key string, v any) (store.Info, error) {
	b, info, err := store.ReadAll(ctx, st, key)
	if err != nil {
		return store.Info{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return store.Info{}, fmt.Errorf("decoding %s: %w", store.JoinURL(st.URL(), key), err)
	}
	return info, nil
}

func writeJSON(ctx context.Context, st store.Store, key string, v any, cond store.Condition) (store.Info, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return store.Info{}, fmt.Errorf("encoding %s: %w", key, err)
	}
	b = append(b, '\n')
	return st.Put(ctx, key, bytes.NewReader(b), cond)
}

// ReadSpec reads and validates the desired spec. It returns an error
// wrapping ErrNoSpec when there is none.
func ReadSpec(ctx context.Context, st store.Store, l Layout) (Spec, error) {
	var s Spec
	if _, err := readJSON(ctx, st, l.SpecKey(), &s); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Spec{}, fmt.Errorf("%s: %w", store.JoinURL(st.URL(), l.SpecKey()), ErrNoSpec)
		}
		return Spec{}, fmt.Errorf("reading etcd cluster spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("etcd cluster spec %s: %w", store.JoinURL(st.URL(), l.SpecKey()), err)
	}
	return s, nil
}

// WriteSpec validates and writes the desired spec.
func WriteSpec(ctx context.Context, st store.Store, l Layout, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if _, err := writeJSON(ctx, st, l.SpecKey(), s, store.Condition{}); err != nil {
		return fmt.Errorf("writing etcd cluster spec: %w", err)
	}
	return nil
}

// SeedSpec writes s as the desired spec only when the control area has
// none (create-if-absent); it never overwrites a spec, so a spec changed
// with etcd-manager-ctl stays. created says whether this call wrote it.
func SeedSpec(ctx context.Context, st store.Store, l Layout, s Spec) (created bool, err error) {
	if err := s.Validate(); err != nil {
		return false, err
	}
	_, err = writeJSON(ctx, st, l.SpecKey(), s, store.Condition{IfAbsent: true})
	switch {
	case errors.Is(err, store.ErrPrecondition):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("seeding etcd cluster spec: %w", err)
	}
	return true, nil
}

// Member is one member of the initial cluster.
type Member struct {
	Name     string   `json:"name"`
	PeerURLs []string `json:"peerURLs"`
}

// Created is the created marker. Whoever writes it (create-if-absent) is the
// only one that may start a new cluster; everyone else joins it.
type Created struct {
	ClusterToken   string    `json:"clusterToken"`
	EtcdVersion    string    `json:"etcdVersion"`
	InitialMembers []Member  `json:"initialMembers"`
	CreatedBy      string    `json:"createdBy"`
	LeaderTerm     int64     `json:"leaderTerm"`
	Created        time.Time `json:"created"`
}

// CreateCluster writes the created marker if none exists. It returns an
// error wrapping ErrAlreadyCreated when another leader won.
func CreateCluster(ctx context.Context, st store.Store, l Layout, c Created) error {
	if _, err := writeJSON(ctx, st, l.CreatedKey(), c, store.Condition{IfAbsent: true}); err != nil {
		if errors.Is(err, store.ErrPrecondition) {
			return fmt.Errorf("%s: %w", store.JoinURL(st.URL(), l.CreatedKey()), ErrAlreadyCreated)
		}
		return fmt.Errorf("writing created marker: %w", err)
	}
	return nil
}

// ReadCreated reads the created marker; ok is false when no cluster was created.
func ReadCreated(ctx context.Context, st store.Store, l Layout) (c Created, ok bool, err error) {
	if _, err := readJSON(ctx, st, l.CreatedKey(), &c); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Created{}, false, nil
		}
		return Created{}, false, fmt.Errorf("reading created marker: %w", err)
	}
	return c, true, nil
}

// Command is a queued command for the leader (KindBackupNow; restores
// come later). A command runs at most once: the leader claims it with a
// create-if-absent write of <id>.claimed before acting.
type Command struct {
	ID      string            `json:"id"`
	Kind    string            `json:"kind"`
	Args    map[string]string `json:"args,omitempty"`
	Created time.Time         `json:"created"`
}

// Claim records who claimed a command.
type Claim struct {
	LeaderID   string    `json:"leaderID"`
	LeaderTerm int64     `json:"leaderTerm"`
	Claimed    time.Time `json:"claimed"`
}

// QueueCommand writes a command; its ID must be new.
func QueueCommand(ctx context.Context, st store.Store, l Layout, c Command) error {
	if c.ID == "" || strings.ContainsAny(c.ID, "/ ") || isMarker(c.ID) {
		return fmt.Errorf("command id %q: must be non-empty, without slashes or spaces, not ending in .claimed or .result", c.ID)
	}
	if _, err := writeJSON(ctx, st, path.Join(l.CommandsPrefix(), c.ID), c, store.Condition{IfAbsent: true}); err != nil {
		return fmt.Errorf("queueing command %s: %w", c.ID, err)
	}
	return nil
}

// PendingCommands lists commands not yet claimed, oldest ID first.
func PendingCommands(ctx context.Context, st store.Store, l Layout) ([]Command, error) {
	infos, err := st.List(ctx, l.CommandsPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing commands: %w", err)
	}
	claimed := map[string]bool{}
	for _, i := range infos {
		if strings.HasSuffix(i.Key, ".claimed") {
			claimed[strings.TrimSuffix(i.Key, ".claimed")] = true
		}
	}
	var out []Command
	for _, i := range infos {
		if isMarker(i.Key) || claimed[i.Key] {
			continue
		}
		var c Command
		if _, err := readJSON(ctx, st, i.Key, &c); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out, nil
}

// ClaimCommand fences a command's execution: exactly one caller gets nil;
// the others get an error wrapping store.ErrPrecondition.
func ClaimCommand(ctx context.Context, st store.Store, l Layout, id string, c Claim) error {
	if _, err := writeJSON(ctx, st, path.Join(l.CommandsPrefix(), id+".claimed"), c, store.Condition{IfAbsent: true}); err != nil {
		return fmt.Errorf("claiming command %s: %w", id, err)
	}
	return nil
}

// BootstrappedKey marks that the created cluster once answered with a
// quorum; after that, creation is never retried.
func (l Layout) BootstrappedKey() string { return path.Join(l.Prefix(), "etcd-cluster-bootstrapped") }

// MarkBootstrapped writes the bootstrapped marker if absent.
func MarkBootstrapped(ctx context.Context, st store.Store, l Layout, by string) error {
	_, err := writeJSON(ctx, st, l.BootstrappedKey(), map[string]string{"by": by}, store.Condition{IfAbsent: true})
	if err != nil && !errors.Is(err, store.ErrPrecondition) {
		return fmt.Errorf("writing bootstrapped marker: %w", err)
	}
	return nil
}

// IsBootstrapped reports whether the bootstrapped marker exists.
func IsBootstrapped(ctx context.Context, st store.Store, l Layout) (bool, error) {
	_, err := st.Stat(ctx, l.BootstrappedKey())
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading bootstrapped marker: %w", err)
	}
	return true, nil
}

func isMarker(key string) bool {
	return strings.HasSuffix(key, ".claimed") || strings.HasSuffix(key, ".result")
}

// Result records how a claimed command ended.
type Result struct {
	LeaderID string    `json:"leaderID"`
	Finished time.Time `json:"finished"`
	Error    string    `json:"error,omitempty"`
	// Detail is what the command produced, for the operator: the name of
	// the backup a backup-now command took.
	Detail string `json:"detail,omitempty"`
}

// KindBackupNow asks the leader for a full backup now; the result's
// Detail names the backup. The leader runs it outside its reconcile tick.
const KindBackupNow = "backup-now"

// WriteResult records a command's outcome at commands/<id>.result.
func WriteResult(ctx context.Context, st store.Store, l Layout, id string, r Result) error {
	if _, err := writeJSON(ctx, st, path.Join(l.CommandsPrefix(), id+".result"), r, store.Condition{}); err != nil {
		return fmt.Errorf("writing result of command %s: %w", id, err)
	}
	return nil
}

// ReadResult reads a command's outcome; ok is false while there is none.
func ReadResult(ctx context.Context, st store.Store, l Layout, id string) (r Result, ok bool, err error) {
	if _, err := readJSON(ctx, st, path.Join(l.CommandsPrefix(), id+".result"), &r); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Result{}, false, nil
		}
		return Result{}, false, err
	}
	return r, true, nil
}
