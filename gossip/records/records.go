// Package records is the replicated key-value state that gossip carries: DNS
// names, pod CIDRs and whatever else a part of the agent publishes. Every
// record has one owner, the node that wrote it, and only the owner writes it;
// records are keyed by (owner, key) and versioned by the owner's hybrid
// logical clock. Full state is exchanged on join and at memberlist's push/pull
// interval; single changes travel as broadcasts. The Table implements
// memberlist's Delegate and EventDelegate.
//
// Ordering rule: for one (owner, key), the record with the larger HLC wins.
// Readers that need one value for a key across owners (Lookup) take the
// record with the largest (HLC, owner). Because HLC timestamps order every
// write after everything its writer had seen, a write made after another
// write was received wins over it whatever the wall clocks say; and a record
// whose timestamp lies more than the clock's maximum offset in the future is
// refused (and counted), so a node whose clock runs ahead cannot publish
// versions that would beat later writes, nor drag other clocks forward.
package records

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/gossip/hlc"
)

// Record is one replicated entry.
type Record struct {
	Owner   string        `json:"owner"`
	Key     string        `json:"key"`
	Value   []byte        `json:"value,omitempty"`
	Version hlc.Timestamp `json:"version"`
	// Deleted marks a tombstone, kept for Config.TombstoneTTL.
	Deleted bool `json:"deleted,omitempty"`
}

// Config configures a Table.
type Config struct {
	// NodeName is this node's memberlist name: the owner of its writes.
	NodeName string
	// Clock versions writes; it must be the only clock of this node.
	Clock *hlc.Clock
	// Now is the local clock for expiry (tombstones, withdrawals); time.Now when nil.
	Now func() time.Time
	// TombstoneTTL is how long a deleted record is remembered.
	TombstoneTTL time.Duration
	// LeaveGrace is how long the records of a node that left or died are
	// kept before they are withdrawn.
	LeaveGrace time.Duration
	// SweepInterval is how often expired tombstones and departed owners are
	// removed.
	SweepInterval time.Duration
	// RetransmitMult scales how many times a broadcast is sent (times log(N+1)).
	RetransmitMult int
	// RebroadcastAge: a record learned from a full-state exchange is passed
	// on by broadcast only when it is younger than this (a partition heal
	// spreads fast); older ones are left to the periodic exchanges, so a
	// joining node does not re-broadcast the whole table.
	RebroadcastAge time.Duration
	// Limits on a record and on messages.
	MaxOwnerLen        int
	MaxKeyLen          int
	MaxValueLen        int
	MaxRecordsPerOwner int
	MaxOwners          int
	// Registerer receives the table's metrics; nil for none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// DefaultConfig returns LAN defaults for node name.
func DefaultConfig(node string) Config {
	return Config{
		NodeName:           node,
		TombstoneTTL:       10 * time.Minute,
		LeaveGrace:         30 * time.Second,
		SweepInterval:      time.Second,
		RetransmitMult:     4,
		RebroadcastAge:     30 * time.Second,
		MaxOwnerLen:        128,
		MaxKeyLen:          256,
		MaxValueLen:        512,
		MaxRecordsPerOwner: 256,
		MaxOwners:          10000,
	}
}

// Validate returns every problem with the configuration, naming the field.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("records.NodeName: empty"))
	} else if len(c.NodeName) > c.MaxOwnerLen {
		errs = append(errs, fmt.Errorf("records.NodeName: %d bytes, more than MaxOwnerLen %d", len(c.NodeName), c.MaxOwnerLen))
	}
	if c.Clock == nil {
		errs = append(errs, errors.New("records.Clock: nil"))
	}
	pos := map[string]time.Duration{"TombstoneTTL": c.TombstoneTTL, "LeaveGrace": c.LeaveGrace, "SweepInterval": c.SweepInterval}
	for _, k := range []string{"TombstoneTTL", "LeaveGrace", "SweepInterval"} {
		if pos[k] <= 0 {
			errs = append(errs, fmt.Errorf("records.%s: must be positive, got %s", k, pos[k]))
		}
	}
	ints := []struct {
		name string
		v    int
	}{{"RetransmitMult", c.RetransmitMult}, {"MaxOwnerLen", c.MaxOwnerLen}, {"MaxKeyLen", c.MaxKeyLen}, {"MaxValueLen", c.MaxValueLen}, {"MaxRecordsPerOwner", c.MaxRecordsPerOwner}, {"MaxOwners", c.MaxOwners}}
	for _, f := range ints {
		if f.v <= 0 {
			errs = append(errs, fmt.Errorf("records.%s: must be positive, got %d", f.name, f.v))
		}
	}
	if c.MaxOwnerLen+c.MaxKeyLen+c.MaxValueLen > 1200 {
		errs = append(errs, fmt.Errorf("records: MaxOwnerLen+MaxKeyLen+MaxValueLen = %d, more than 1200 bytes: a record must fit in one UDP packet", c.MaxOwnerLen+c.MaxKeyLen+c.MaxValueLen))
	}
	return errors.Join(errs...)
}

type entry struct {
	Record
	// received is the local time the entry was stored, for tombstone expiry.
	received time.Time
}

type ownerState struct {
	recs map[string]*entry
	// alive is whether memberlist reports the owner as a live member.
	alive bool
	// left is when the owner stopped being alive (zero while alive).
	left time.Time
	// withdrawn marks an owner whose records were dropped after LeaveGrace;
	// records arriving for it are ignored until it is alive again.
	withdrawn bool
}

// Table is the replicated record table of one node.
type Table struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	limits  Limits
	queue   *memberlist.TransmitLimitedQueue
	metrics *metrics

	mu        sync.Mutex // guards owners, aliveN, subs, skewWarn
	owners    map[string]*ownerState
	aliveN    int
	subs      map[chan struct{}]struct{}
	skewWarn  map[string]time.Time
	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// New returns a running table; Close stops its sweeper.
func New(cfg Config) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Table{
		cfg: cfg,
		log: cfg.Logger,
		now: cfg.Now,
		limits: Limits{
			MaxOwnerLen: cfg.MaxOwnerLen,
			MaxKeyLen:   cfg.MaxKeyLen,
			MaxValueLen: cfg.MaxValueLen,
			MaxRecords:  cfg.MaxRecordsPerOwner * cfg.MaxOwners,
		},
		owners:   map[string]*ownerState{cfg.NodeName: {recs: map[string]*entry{}, alive: true}},
		aliveN:   1,
		subs:     map[chan struct{}]struct{}{},
		skewWarn: map[string]time.Time{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	t.queue = &memberlist.TransmitLimitedQueue{NumNodes: t.numNodes, RetransmitMult: cfg.RetransmitMult}
	m, err := newMetrics(cfg.Registerer, t)
	if err != nil {
		return nil, err
	}
	t.metrics = m
	go t.sweeper()
	return t, nil
}

// Close stops the sweeper and waits for it. Metrics stay registered: the
// registry is the caller's. Safe to call twice.
func (t *Table) Close() error {
	t.closeOnce.Do(func() { close(t.stop) })
	<-t.done
	return nil
}

func (t *Table) numNodes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.aliveN
}

// NodeName returns the owner name of this node's writes.
func (t *Table) NodeName() string { return t.cfg.NodeName }

func (t *Table) checkLocal(key string, value []byte) error {
	if key == "" || len(key) > t.cfg.MaxKeyLen || !utf8.ValidString(key) {
		return fmt.Errorf("record key %q: must be 1 to %d bytes of UTF-8", key, t.cfg.MaxKeyLen)
	}
	if len(value) > t.cfg.MaxValueLen {
		return fmt.Errorf("record %q: value of %d bytes exceeds the limit of %d", key, len(value), t.cfg.MaxValueLen)
	}
	return nil
}

// Put writes this node's record for key.
func (t *Table) Put(key string, value []byte) error {
	if err := t.checkLocal(key, value); err != nil {
		return err
	}
	t.mu.Lock()
	own := t.owners[t.cfg.NodeName]
	if cur, ok := own.recs[key]; ok && !cur.Deleted && bytes.Equal(cur.Value, value) {
		t.mu.Unlock()
		return nil
	}
	if _, ok := own.recs[key]; !ok && len(own.recs) >= t.cfg.MaxRecordsPerOwner {
		t.mu.Unlock()
		return fmt.Errorf("record %q: this node already has %d records, the limit", key, len(own.recs))
	}
	r := t.writeLocked(key, append([]byte(nil), value...), false)
	t.mu.Unlock()
	t.broadcast(r)
	t.notify()
	return nil
}

// Delete removes this node's record for key, leaving a tombstone.
func (t *Table) Delete(key string) error {
	if err := t.checkLocal(key, nil); err != nil {
		return err
	}
	t.mu.Lock()
	cur, ok := t.owners[t.cfg.NodeName].recs[key]
	if !ok || cur.Deleted {
		t.mu.Unlock()
		return nil
	}
	r := t.writeLocked(key, nil, true)
	t.mu.Unlock()
	t.broadcast(r)
	t.notify()
	return nil
}

func (t *Table) writeLocked(key string, value []byte, deleted bool) Record {
	r := Record{Owner: t.cfg.NodeName, Key: key, Value: value, Deleted: deleted, Version: t.cfg.Clock.Now()}
	t.owners[t.cfg.NodeName].recs[key] = &entry{Record: r, received: t.now()}
	return r
}

// Get returns the record of owner for key, tombstones included.
func (t *Table) Get(owner, key string) (Record, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.owners[owner]
	if !ok {
		return Record{}, false
	}
	e, ok := o.recs[key]
	if !ok {
		return Record{}, false
	}
	return e.Record, true
}

// Lookup returns the winning live record for key across owners: the largest
// (HLC, owner). A tombstone that wins hides the key.
func (t *Table) Lookup(key string) (Record, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var best *entry
	for _, o := range t.owners {
		e, ok := o.recs[key]
		if !ok {
			continue
		}
		if best == nil || best.Version.Less(e.Version) || (best.Version == e.Version && best.Owner < e.Owner) {
			best = e
		}
	}
	if best == nil || best.Deleted {
		return Record{}, false
	}
	return best.Record, true
}

// View is a record with its owner's liveness, for readers such as DNS.
type View struct {
	Record
	OwnerAlive bool `json:"ownerAlive"`
}

// All returns every record, tombstones included, sorted by key then owner.
func (t *Table) All() []View {
	t.mu.Lock()
	out := make([]View, 0, 16)
	for _, o := range t.owners {
		for _, e := range o.recs {
			out = append(out, View{Record: e.Record, OwnerAlive: o.alive})
		}
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].Owner < out[j].Owner
	})
	return out
}

// Subscribe returns a channel that receives a value (coalesced) after every
// change to the table, and a function that ends the subscription.
func (t *Table) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	t.mu.Lock()
	t.subs[ch] = struct{}{}
	t.mu.Unlock()
	return ch, func() {
		t.mu.Lock()
		delete(t.subs, ch)
		t.mu.Unlock()
	}
}

func (t *Table) notify() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ch := range t.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

func (t *Table) broadcast(r Record) {
	t.queue.QueueBroadcast(&broadcast{name: r.Owner + "\x00" + r.Key, msg: encode([]*Record{&r})})
}

// origin says where merged records came from.
type origin int

const (
	fromBroadcast origin = iota
	fromState
)

// merge folds remote records into the table and returns how many changed it.
func (t *Table) merge(recs []Record, from origin) int {
	var rebroadcast []Record
	changed := 0
	now := t.now()
	t.mu.Lock()
	for i := range recs {
		r := recs[i]
		if reason := t.invalidLocked(&r); reason != "" {
			t.metrics.dropped.WithLabelValues(reason).Inc()
			continue
		}
		if err := t.cfg.Clock.Check(r.Version); err != nil {
			t.metrics.dropped.WithLabelValues("clock_ahead").Inc()
			if last, ok := t.skewWarn[r.Owner]; !ok || now.Sub(last) > time.Minute {
				t.skewWarn[r.Owner] = now
				t.log.Warn("refusing records from a node whose clock is ahead", "owner", r.Owner, "key", r.Key, "version", r.Version, "err", err)
			}
			continue
		}
		if r.Owner == t.cfg.NodeName {
			if re, ok := t.echoLocked(r); ok {
				rebroadcast = append(rebroadcast, re)
				changed++
			}
			continue
		}
		o := t.owners[r.Owner]
		if o == nil {
			if len(t.owners) >= t.cfg.MaxOwners {
				t.metrics.dropped.WithLabelValues("limit").Inc()
				continue
			}
			// Until memberlist reports the owner alive, it counts as
			// departed from now: records of a node that is already gone
			// (carried by a peer within its grace period) are withdrawn
			// here too instead of living on.
			o = &ownerState{recs: map[string]*entry{}, left: now}
			t.owners[r.Owner] = o
		}
		if o.withdrawn && !o.alive {
			continue
		}
		cur, ok := o.recs[r.Key]
		if ok && !cur.Version.Less(r.Version) {
			continue
		}
		if !ok && len(o.recs) >= t.cfg.MaxRecordsPerOwner {
			t.metrics.dropped.WithLabelValues("limit").Inc()
			continue
		}
		o.recs[r.Key] = &entry{Record: r, received: now}
		_ = t.cfg.Clock.Update(r.Version) // Check above passed
		if from == fromBroadcast {
			lag := t.cfg.Clock.Physical().Sub(r.Version.Time())
			if lag >= 0 {
				t.metrics.lag.Observe(lag.Seconds())
			}
		}
		if from == fromBroadcast || t.cfg.Clock.Physical().Sub(r.Version.Time()) < t.cfg.RebroadcastAge {
			rebroadcast = append(rebroadcast, r)
		}
		changed++
	}
	t.mu.Unlock()
	for _, r := range rebroadcast {
		t.broadcast(r)
	}
	if changed > 0 {
		t.notify()
	}
	return changed
}

// echoLocked handles a record of this node's own that came back from the
// cluster with a version newer than what the node holds: written by an
// earlier run of this node. The node moves its clock past it and re-asserts
// its current state (the live value, or a tombstone) with a newer version,
// so its counter survives restarts without a disk.
func (t *Table) echoLocked(r Record) (Record, bool) {
	own := t.owners[t.cfg.NodeName]
	cur, ok := own.recs[r.Key]
	if ok && !cur.Version.Less(r.Version) {
		return Record{}, false
	}
	_ = t.cfg.Clock.Update(r.Version)
	if ok {
		return t.writeLocked(r.Key, cur.Value, cur.Deleted), true
	}
	if r.Deleted {
		own.recs[r.Key] = &entry{Record: r, received: t.now()}
		return Record{}, false
	}
	return t.writeLocked(r.Key, nil, true), true
}

func (t *Table) invalidLocked(r *Record) string {
	switch {
	case r.Owner == "" || len(r.Owner) > t.cfg.MaxOwnerLen:
		return "invalid"
	case r.Key == "" || len(r.Key) > t.cfg.MaxKeyLen || !utf8.ValidString(r.Key) || !utf8.ValidString(r.Owner):
		return "invalid"
	case len(r.Value) > t.cfg.MaxValueLen:
		return "oversized"
	case r.Deleted && len(r.Value) > 0:
		return "invalid"
	case r.Version.Wall <= 0:
		return "invalid"
	}
	return ""
}

// sweeper drops expired tombstones and withdraws the records of owners that
// have been gone longer than LeaveGrace.
func (t *Table) sweeper() {
	defer close(t.done)
	tick := time.NewTicker(t.cfg.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			if t.sweep() {
				t.notify()
			}
		}
	}
}

func (t *Table) sweep() bool {
	now := t.now()
	changed := false
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, o := range t.owners {
		if name != t.cfg.NodeName && !o.alive && !o.withdrawn && !o.left.IsZero() && now.Sub(o.left) >= t.cfg.LeaveGrace {
			if len(o.recs) > 0 {
				t.log.Info("withdrawing the records of a departed node", "node", name, "records", len(o.recs), "gone", now.Sub(o.left).Round(time.Second))
				changed = true
			}
			o.recs = map[string]*entry{}
			o.withdrawn = true
		}
		for k, e := range o.recs {
			if e.Deleted && now.Sub(e.received) >= t.cfg.TombstoneTTL {
				delete(o.recs, k)
			}
		}
		// Forget owners that are gone and withdrawn for longer than a
		// tombstone lives, so departed names do not accumulate.
		if name != t.cfg.NodeName && !o.alive && o.withdrawn && now.Sub(o.left) >= t.cfg.LeaveGrace+t.cfg.TombstoneTTL {
			delete(t.owners, name)
		}
	}
	return changed
}

// Delegate returns the memberlist delegate that carries the table.
func (t *Table) Delegate() memberlist.Delegate { return (*delegate)(t) }

// Events returns the memberlist event delegate that tracks owner liveness.
func (t *Table) Events() memberlist.EventDelegate { return (*events)(t) }

type delegate Table

func (d *delegate) NodeMeta(limit int) []byte { return nil }

func (d *delegate) NotifyMsg(b []byte) {
	t := (*Table)(d)
	recs, err := decode(b, Limits{MaxOwnerLen: t.cfg.MaxOwnerLen, MaxKeyLen: t.cfg.MaxKeyLen, MaxValueLen: t.cfg.MaxValueLen, MaxRecords: 64})
	if err != nil {
		t.metrics.dropped.WithLabelValues("malformed").Inc()
		t.log.Debug("dropping a malformed gossip message", "bytes", len(b), "err", err)
		return
	}
	t.merge(recs, fromBroadcast)
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte {
	t := (*Table)(d)
	t.mu.Lock()
	recs := make([]*Record, 0, 64)
	for _, o := range t.owners {
		if o.withdrawn && !o.alive {
			continue
		}
		for _, e := range o.recs {
			r := e.Record
			recs = append(recs, &r)
		}
	}
	t.mu.Unlock()
	return encode(recs)
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	t := (*Table)(d)
	recs, err := decode(buf, t.limits)
	if err != nil {
		t.metrics.dropped.WithLabelValues("malformed").Inc()
		t.log.Debug("dropping malformed remote state", "bytes", len(buf), "err", err)
		return
	}
	t.merge(recs, fromState)
}

type events Table

func (e *events) NotifyJoin(n *memberlist.Node) { (*Table)(e).setAlive(n.Name, true) }
func (e *events) NotifyLeave(n *memberlist.Node) {
	(*Table)(e).setAlive(n.Name, false)
}
func (e *events) NotifyUpdate(n *memberlist.Node) {}

func (t *Table) setAlive(name string, alive bool) {
	if name == t.cfg.NodeName {
		return
	}
	t.mu.Lock()
	o := t.owners[name]
	if o == nil {
		o = &ownerState{recs: map[string]*entry{}, left: t.now()}
		t.owners[name] = o
	}
	if o.alive != alive {
		if alive {
			t.aliveN++
			o.left = time.Time{}
			o.withdrawn = false
		} else {
			t.aliveN--
			o.left = t.now()
		}
		o.alive = alive
	}
	t.mu.Unlock()
	t.notify()
}

// Counts returns the number of live records and tombstones.
func (t *Table) Counts() (live, tombstones int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.owners {
		for _, e := range o.recs {
			if e.Deleted {
				tombstones++
			} else {
				live++
			}
		}
	}
	return live, tombstones
}

// String helps debugging.
func (r Record) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s@%s", r.Owner, r.Key, r.Version)
	if r.Deleted {
		b.WriteString(" (deleted)")
	} else {
		fmt.Fprintf(&b, "=%q", r.Value)
	}
	return b.String()
}
