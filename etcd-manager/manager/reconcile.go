package manager

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/etcdprocess"
	"github.com/kopsnode/agents/etcd-manager/peer"
	"github.com/kopsnode/agents/pkg/store"
)

// tick is one level-triggered pass: supervise the local etcd, announce
// ourselves, gather the peers, take part in the election, and converge the
// cluster if leader.
func (m *Manager) tick(ctx context.Context) error {
	m.supervise()
	self := m.Self()
	if reg, ok := m.cfg.Discovery.(discovery.Registrar); ok {
		if err := reg.Register(ctx, self); err != nil {
			m.logger.Warn("registering in discovery", "err", err)
		}
	}
	peers, err := m.cfg.Discovery.Peers(ctx)
	if err != nil {
		m.logger.Warn("discovering peers", "err", err)
	}
	infos := m.gather(ctx, peers)
	m.writeHosts(ctx, infos)
	if _, _, _, err := m.certs.cas(); err != nil {
		if err := m.loadCAs(ctx); err != nil {
			m.logger.Warn("loading CAs", "err", err)
		} else {
			m.logger.Info("CAs loaded from the state store")
		}
	}
	m.rotateOwnManagerCert()
	m.ensureAPIServerCert()

	spec, specErr := control.ReadSpec(ctx, m.cfg.Store, m.layout)
	if errors.Is(specErr, control.ErrNoSpec) && m.cfg.Seed != nil {
		spec, specErr = m.seedSpec(ctx)
	}
	m.mu.Lock()
	m.status.Peers = sortedInfos(infos)
	m.status.Spec = nil
	if specErr == nil {
		s := spec
		m.status.Spec = &s
	}
	m.mu.Unlock()
	if specErr != nil {
		m.stepDown(ctx, "cannot read a valid spec")
		return specErr
	}
	wasLeader, _ := m.lease.IsLeader()
	if len(infos) < control.Quorum(spec.MemberCount) {
		m.stepDown(ctx, fmt.Sprintf("only %d of the %d peers needed for a quorum are reachable", len(infos), control.Quorum(spec.MemberCount)))
		if _, err := m.lease.Observe(ctx); err != nil {
			return err
		}
		m.setLeader(false, 0)
		m.markReconciled()
		return nil
	}
	candidate := self.ID
	for id := range infos {
		if id < candidate {
			candidate = id
		}
	}
	var isLeader bool
	var term int64
	if candidate == self.ID || wasLeader {
		isLeader, term, err = m.lease.Acquire(ctx)
		if err != nil {
			m.setLeader(false, 0)
			return err
		}
	} else if _, err := m.lease.Observe(ctx); err != nil {
		return err
	}
	if isLeader && !wasLeader {
		m.logger.Info("became leader", "term", term, "reachablePeers", len(infos))
		m.mu.Lock()
		m.leaderSince = m.now()
		m.mu.Unlock()
	}
	if !isLeader && wasLeader {
		m.logger.Info("lost leadership")
	}
	m.setLeader(isLeader, term)
	if isLeader {
		if err := m.reconcile(ctx, spec, infos, term); err != nil {
			return err
		}
	}
	m.markReconciled()
	return nil
}

// seedSpec writes the configured seed as the control spec when the store
// has none, and returns the spec the store then holds (another instance
// may have seeded first, or an operator written one meanwhile).
func (m *Manager) seedSpec(ctx context.Context) (control.Spec, error) {
	created, err := control.SeedSpec(ctx, m.cfg.Store, m.layout, *m.cfg.Seed)
	if err != nil {
		return control.Spec{}, err
	}
	if created {
		m.logger.Info("seeded the etcd cluster spec from the configuration", "members", m.cfg.Seed.MemberCount, "version", m.cfg.Seed.EtcdVersion)
	}
	return control.ReadSpec(ctx, m.cfg.Store, m.layout)
}

func (m *Manager) stepDown(ctx context.Context, why string) {
	if ok, _ := m.lease.IsLeader(); ok {
		m.logger.Warn("stepping down as leader", "why", why)
		if err := m.lease.Release(ctx); err != nil {
			m.logger.Warn("releasing lease", "err", err)
		}
	}
	m.setLeader(false, 0)
}

// gather asks every discovered peer for its Info, in parallel; unreachable
// peers are left out. The local instance is always in.
func (m *Manager) gather(ctx context.Context, peers []discovery.Peer) map[string]peer.Info {
	self, _ := m.Info(ctx)
	out := map[string]peer.Info{self.ID: self}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.ID == self.ID {
			continue
		}
		wg.Add(1)
		go func(p discovery.Peer) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
			defer cancel()
			info, err := m.client.Info(cctx, p.ManagerAddr)
			if err != nil {
				m.logger.Debug("peer unreachable", "peer", p.ID, "addr", p.ManagerAddr, "err", err)
				return
			}
			if info.ID != p.ID {
				m.logger.Warn("peer answers with another identity", "expected", p.ID, "got", info.ID, "addr", p.ManagerAddr)
				return
			}
			mu.Lock()
			out[p.ID] = info
			mu.Unlock()
		}(p)
	}
	wg.Wait()
	return out
}

func sortedInfos(infos map[string]peer.Info) []peer.Info {
	out := make([]peer.Info, 0, len(infos))
	for _, i := range infos {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

func sortedIDs(infos map[string]peer.Info) []string {
	ids := make([]string, 0, len(infos))
	for id := range infos {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func newToken() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "etcd-" + hex.EncodeToString(b[:]), nil
}

func initialCluster(ms []control.Member) string {
	var parts []string
	for _, mm := range ms {
		for _, u := range mm.PeerURLs {
			parts = append(parts, mm.Name+"="+u)
		}
	}
	return strings.Join(parts, ",")
}

// reconcile converges the etcd cluster on spec. It makes at most one
// membership change per call; the next tick sees the result.
func (m *Manager) reconcile(ctx context.Context, spec control.Spec, infos map[string]peer.Info, term int64) error {
	created, ok, err := control.ReadCreated(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return err
	}
	if !ok {
		m.setBackupSource(nil)
		return m.createCluster(ctx, spec, infos, term)
	}
	var endpoints []string
	src := &backupSource{spec: spec, token: created.ClusterToken}
	for _, id := range sortedIDs(infos) {
		i := infos[id]
		if i.EtcdHealthy && !i.EtcdLearner && i.ClusterToken == created.ClusterToken {
			endpoints = append(endpoints, i.ClientURLs...)
			if len(i.ClientURLs) > 0 {
				// This instance's own member first: its snapshot does not
				// cross the network.
				tg := backupTarget{member: id, endpoint: i.ClientURLs[0]}
				if id == m.ID() {
					src.targets = append([]backupTarget{tg}, src.targets...)
				} else {
					src.targets = append(src.targets, tg)
				}
			}
		}
	}
	m.setBackupSource(src)
	if len(endpoints) == 0 {
		return m.finishCreation(ctx, created, infos, term)
	}
	c, err := m.clusterClient(endpoints)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
	resp, err := c.MemberList(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("listing etcd members via %v: %w", endpoints, err)
	}
	if !m.bootstrapped {
		if err := control.MarkBootstrapped(ctx, m.cfg.Store, m.layout, m.ID()); err != nil {
			return err
		}
		m.bootstrapped = true
	}
	return m.converge(ctx, c, spec, created, resp.Members, infos, term)
}

func (m *Manager) clusterClient(endpoints []string) (*clientv3.Client, error) {
	m.mu.Lock()
	c := m.etcdClients["cluster"]
	m.mu.Unlock()
	if c != nil {
		c.SetEndpoints(endpoints...)
		return c, nil
	}
	c, err := m.newEtcdClient(endpoints)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.etcdClients["cluster"] = c
	m.mu.Unlock()
	return c, nil
}

// createCluster creates the cluster if none exists and enough idle peers are
// here. The created marker, written create-if-absent, is the fence.
func (m *Manager) createCluster(ctx context.Context, spec control.Spec, infos map[string]peer.Info, term int64) error {
	var idle []peer.Info
	for _, id := range sortedIDs(infos) {
		i := infos[id]
		if i.ClusterToken != "" || !i.DataDirEmpty || i.EtcdRunning {
			return fmt.Errorf("no cluster was created (%s is absent) but peer %s holds etcd data or membership (token %q); refusing to create a new cluster, nothing changed",
				m.layout.CreatedKey(), i.ID, i.ClusterToken)
		}
		idle = append(idle, i)
	}
	if _, err := etcdprocess.BinaryPath(m.cfg.BinDirRoot, spec.EtcdVersion); err != nil {
		return fmt.Errorf("cannot create cluster: %w", err)
	}
	if len(idle) < control.Quorum(spec.MemberCount) {
		return nil
	}
	m.mu.Lock()
	since := m.leaderSince
	m.mu.Unlock()
	if len(idle) < spec.MemberCount && m.now().Sub(since) < 2*m.cfg.LeaseDuration {
		// Give the other peers a moment to show up, so the cluster starts
		// at full size; after that a quorum is enough and the rest join.
		return nil
	}
	n := min(spec.MemberCount, len(idle))
	chosen := idle[:n]
	token, err := newToken()
	if err != nil {
		return err
	}
	created := control.Created{ClusterToken: token, EtcdVersion: spec.EtcdVersion, CreatedBy: m.ID(), LeaderTerm: term, Created: m.now().UTC()}
	for _, i := range chosen {
		created.InitialMembers = append(created.InitialMembers, control.Member{Name: i.ID, PeerURLs: i.PeerURLs})
	}
	if ok, _ := m.lease.IsLeader(); !ok {
		return errors.New("lost the leader lease before creating the cluster")
	}
	if err := control.CreateCluster(ctx, m.cfg.Store, m.layout, created); err != nil {
		if errors.Is(err, control.ErrAlreadyCreated) {
			m.logger.Info("another leader created the cluster first")
			return nil
		}
		return err
	}
	m.logger.Info("creating etcd cluster", "token", token, "members", n, "version", spec.EtcdVersion)
	return m.sendCreateJoins(ctx, created, infos, term)
}

func (m *Manager) sendCreateJoins(ctx context.Context, created control.Created, infos map[string]peer.Info, term int64) error {
	ic := initialCluster(created.InitialMembers)
	var errs []error
	for _, mm := range created.InitialMembers {
		i, ok := infos[mm.Name]
		if !ok || !i.Idle() {
			continue
		}
		req := peer.JoinRequest{LeaderID: m.ID(), LeaderTerm: term, ClusterToken: created.ClusterToken, EtcdVersion: created.EtcdVersion, InitialCluster: ic, State: "new"}
		if err := m.join(ctx, i, req); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) join(ctx context.Context, i peer.Info, req peer.JoinRequest) error {
	if i.ID == m.ID() {
		return m.Join(ctx, req)
	}
	cctx, cancel := context.WithTimeout(ctx, 3*m.cfg.PeerTimeout)
	defer cancel()
	return m.client.Join(cctx, i.ManagerAddr, req)
}

func (m *Manager) leave(ctx context.Context, i peer.Info, req peer.LeaveRequest) error {
	if i.ID == m.ID() {
		return m.Leave(ctx, req)
	}
	cctx, cancel := context.WithTimeout(ctx, 3*m.cfg.PeerTimeout)
	defer cancel()
	return m.client.Leave(cctx, i.ManagerAddr, req)
}

func (m *Manager) rotate(ctx context.Context, i peer.Info, req peer.RotateRequest) error {
	if i.ID == m.ID() {
		return m.Rotate(ctx, req)
	}
	cctx, cancel := context.WithTimeout(ctx, 3*m.cfg.PeerTimeout)
	defer cancel()
	return m.client.Rotate(cctx, i.ManagerAddr, req)
}

// finishCreation handles a created cluster with no healthy member. Before
// the cluster ever answered, initial members that never got their join
// (the creating leader died) are told again; after, nothing is done but
// wait: members restart their own etcd from their saved state.
func (m *Manager) finishCreation(ctx context.Context, created control.Created, infos map[string]peer.Info, term int64) error {
	if !m.bootstrapped {
		b, err := control.IsBootstrapped(ctx, m.cfg.Store, m.layout)
		if err != nil {
			return err
		}
		m.bootstrapped = b
	}
	if m.bootstrapped {
		return errors.New("no healthy etcd member answers; waiting for members to restart")
	}
	return m.sendCreateJoins(ctx, created, infos, term)
}

type memberView struct {
	member  *etcdserverpb.Member
	name    string
	info    *peer.Info
	healthy bool
}

func (v memberView) started() bool { return v.member.Name != "" }

// converge applies at most one change to the running cluster.
func (m *Manager) converge(ctx context.Context, c *clientv3.Client, spec control.Spec, created control.Created, members []*etcdserverpb.Member, infos map[string]peer.Info, term int64) error {
	now := m.now()
	byURL := map[string]string{}
	for id, i := range infos {
		for _, u := range i.PeerURLs {
			byURL[u] = id
		}
	}
	var views []memberView
	mapped := map[string]bool{}
	healthyVoters, voters, learners := 0, 0, 0
	version := created.EtcdVersion
	seen := map[string]bool{}
	for _, mm := range members {
		v := memberView{member: mm, name: mm.Name}
		if v.name == "" {
			for _, u := range mm.PeerURLs {
				if id, ok := byURL[u]; ok {
					v.name = id
				}
			}
		}
		if i, ok := infos[v.name]; ok && v.name != "" {
			v.info = &i
			mapped[v.name] = true
			v.healthy = i.EtcdHealthy && i.MemberID == strconv.FormatUint(mm.ID, 16)
			if v.healthy && !mm.IsLearner && i.EtcdVersion != "" {
				version = i.EtcdVersion
			}
		}
		key := strconv.FormatUint(mm.ID, 16)
		seen[key] = true
		m.mu.Lock()
		if v.healthy {
			delete(m.unhealthySince, key)
		} else if _, ok := m.unhealthySince[key]; !ok {
			m.unhealthySince[key] = now
		}
		m.mu.Unlock()
		if mm.IsLearner {
			learners++
		} else {
			voters++
			if v.healthy {
				healthyVoters++
			}
		}
		views = append(views, v)
	}
	m.mu.Lock()
	for k := range m.unhealthySince {
		if !seen[k] {
			delete(m.unhealthySince, k)
		}
	}
	m.status.Members = nil
	for _, v := range views {
		m.status.Members = append(m.status.Members, MemberStatus{Name: v.name, ID: strconv.FormatUint(v.member.ID, 16), PeerURLs: v.member.PeerURLs, ClientURLs: v.member.ClientURLs, Learner: v.member.IsLearner, Healthy: v.healthy})
	}
	m.status.EtcdVersion = version
	m.mu.Unlock()
	m.met.setCluster(len(members), countHealthy(views), version)
	deadFor := func(v memberView) time.Duration {
		m.mu.Lock()
		defer m.mu.Unlock()
		s, ok := m.unhealthySince[strconv.FormatUint(v.member.ID, 16)]
		if !ok {
			return 0
		}
		return now.Sub(s)
	}
	// removeSafe says whether removing v keeps a quorum of healthy voters.
	removeSafe := func(v memberView) bool {
		if v.member.IsLearner {
			return true
		}
		after := healthyVoters
		if v.healthy {
			after--
		}
		return voters > 1 && after >= control.Quorum(voters-1)
	}
	leaderID, leaderTerm := m.ID(), term
	remove := func(v memberView, why string) error {
		if ok, _ := m.lease.IsLeader(); !ok {
			return errors.New("lost the leader lease before removing a member")
		}
		if !m.backupBeforeChange("before removing member " + v.name) {
			return nil
		}
		m.logger.Info("removing etcd member", "member", v.name, "id", strconv.FormatUint(v.member.ID, 16), "why", why)
		rctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
		defer cancel()
		if _, err := c.MemberRemove(rctx, v.member.ID); err != nil {
			return fmt.Errorf("removing member %s: %w", v.name, err)
		}
		if v.info != nil && v.info.ClusterToken != "" {
			if err := m.leave(ctx, *v.info, peer.LeaveRequest{LeaderID: leaderID, LeaderTerm: leaderTerm, ClusterToken: v.info.ClusterToken}); err != nil {
				m.logger.Warn("telling removed member to leave", "member", v.name, "err", err)
			}
		}
		return nil
	}

	// 1. Peers that believe they are members but are not (removed while
	// away, or of an older cluster) leave and become idle.
	for _, id := range sortedIDs(infos) {
		i := infos[id]
		if i.ClusterToken == "" || (i.ClusterToken == created.ClusterToken && mapped[id]) {
			continue
		}
		m.logger.Info("peer is not a member of the cluster; telling it to leave", "peer", id, "token", i.ClusterToken)
		if err := m.leave(ctx, i, peer.LeaveRequest{LeaderID: leaderID, LeaderTerm: leaderTerm, ClusterToken: i.ClusterToken}); err != nil {
			m.logger.Warn("telling peer to leave", "peer", id, "err", err)
		}
		return nil
	}

	// 2. Learners: start them if their join was lost, promote when caught up.
	for _, v := range views {
		if !v.member.IsLearner {
			continue
		}
		switch {
		case v.info != nil && v.info.Idle():
			ic := m.initialClusterOf(views)
			return m.join(ctx, *v.info, peer.JoinRequest{LeaderID: leaderID, LeaderTerm: leaderTerm, ClusterToken: created.ClusterToken, EtcdVersion: version, InitialCluster: ic, State: "existing"})
		case v.info != nil && v.info.EtcdRunning:
			pctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
			_, err := c.MemberPromote(pctx, v.member.ID)
			cancel()
			if err != nil {
				m.logger.Debug("learner not promoted yet", "member", v.name, "err", err)
				return nil
			}
			m.logger.Info("promoted learner", "member", v.name)
			return nil
		case deadFor(v) > m.cfg.DeadMemberThreshold:
			return remove(v, "learner unreachable past the dead-member threshold")
		}
		return nil
	}

	// 3. A started member whose node came back with an empty disk under the
	// same identity: remove the stale member; it is added again below.
	for _, v := range views {
		if v.started() && v.info != nil && v.info.Idle() {
			if !removeSafe(v) {
				return fmt.Errorf("member %s was replaced (empty data dir) but removing it would lose quorum", v.name)
			}
			return remove(v, "node replaced: empty data directory under the same identity")
		}
	}

	// 4. Certificate rotation, one member at a time, only when all are healthy.
	if countHealthy(views) == len(views) {
		var soonest *peer.Info
		for _, v := range views {
			if v.info != nil && !v.info.CertNotAfter.IsZero() && v.info.CertNotAfter.Sub(now) < m.cfg.RenewBefore {
				if soonest == nil || v.info.CertNotAfter.Before(soonest.CertNotAfter) {
					soonest = v.info
				}
			}
		}
		if soonest != nil {
			m.logger.Info("rotating etcd certificates", "member", soonest.ID, "notAfter", soonest.CertNotAfter)
			return m.rotate(ctx, *soonest, peer.RotateRequest{LeaderID: leaderID, LeaderTerm: leaderTerm})
		}
	}

	var idle []peer.Info
	for _, id := range sortedIDs(infos) {
		if i := infos[id]; i.Idle() && !mapped[id] {
			idle = append(idle, i)
		}
	}
	total := len(members)
	switch {
	case total > spec.MemberCount:
		// Shrink: unhealthy members first, the longest dead first; then
		// healthy ones other than this instance, highest ID first.
		cands := append([]memberView(nil), views...)
		sort.SliceStable(cands, func(a, b int) bool {
			va, vb := cands[a], cands[b]
			if va.healthy != vb.healthy {
				return !va.healthy
			}
			if !va.healthy {
				return deadFor(va) > deadFor(vb)
			}
			if (va.name == leaderID) != (vb.name == leaderID) {
				return vb.name == leaderID
			}
			return va.name > vb.name
		})
		for _, v := range cands {
			if removeSafe(v) {
				return remove(v, fmt.Sprintf("cluster has %d members, spec wants %d", total, spec.MemberCount))
			}
		}
		return fmt.Errorf("cluster has %d members, spec wants %d, but no member can be removed without losing quorum", total, spec.MemberCount)
	case total == spec.MemberCount && len(idle) > 0:
		for _, v := range views {
			if !v.healthy && deadFor(v) > m.cfg.DeadMemberThreshold {
				if !removeSafe(v) {
					return fmt.Errorf("member %s is dead and a replacement is waiting, but removing it would lose quorum", v.name)
				}
				return remove(v, fmt.Sprintf("unhealthy for %s and peer %s is waiting to replace it", deadFor(v).Round(time.Second), idle[0].ID))
			}
		}
	case total < spec.MemberCount && learners == 0 && len(idle) > 0:
		if healthyVoters < control.Quorum(voters) {
			return fmt.Errorf("not adding a member: only %d of %d voters are healthy", healthyVoters, voters)
		}
		if _, err := etcdprocess.BinaryPath(m.cfg.BinDirRoot, version); err != nil {
			return err
		}
		n := idle[0]
		if ok, _ := m.lease.IsLeader(); !ok {
			return errors.New("lost the leader lease before adding a member")
		}
		if !m.backupBeforeChange("before adding member " + n.ID) {
			return nil
		}
		actx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
		resp, err := c.MemberAddAsLearner(actx, n.PeerURLs)
		cancel()
		if err != nil {
			return fmt.Errorf("adding %s as learner: %w", n.ID, err)
		}
		m.logger.Info("added etcd learner", "member", n.ID, "id", strconv.FormatUint(resp.Member.ID, 16))
		var all []memberView
		for _, mm := range resp.Members {
			v := memberView{member: mm, name: mm.Name}
			if mm.ID == resp.Member.ID {
				v.name = n.ID
			} else if v.name == "" {
				for _, u := range mm.PeerURLs {
					v.name = byURL[u]
				}
			}
			all = append(all, v)
		}
		return m.join(ctx, n, peer.JoinRequest{LeaderID: leaderID, LeaderTerm: leaderTerm, ClusterToken: created.ClusterToken, EtcdVersion: version, InitialCluster: m.initialClusterOf(all), State: "existing"})
	}
	if spec.EtcdVersion != version {
		m.logger.Warn("spec names another etcd version than the cluster runs; upgrades are not implemented yet", "spec", spec.EtcdVersion, "running", version)
	}
	return m.runCommands(ctx, term)
}

func (m *Manager) initialClusterOf(views []memberView) string {
	var ms []control.Member
	for _, v := range views {
		if v.name != "" {
			ms = append(ms, control.Member{Name: v.name, PeerURLs: v.member.PeerURLs})
		}
	}
	return initialCluster(ms)
}

func countHealthy(views []memberView) int {
	n := 0
	for _, v := range views {
		if v.healthy {
			n++
		}
	}
	return n
}

// runCommands claims pending commands (fenced by create-if-absent) and runs
// those whose kind has a handler; others stay queued.
func (m *Manager) runCommands(ctx context.Context, term int64) error {
	cmds, err := control.PendingCommands(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return err
	}
	for _, c := range cmds {
		run, ok := m.cfg.Commands[c.Kind]
		builtin := m.builtinCommand(c.Kind)
		if !ok && !builtin {
			if !m.warnedCommands[c.ID] {
				m.logger.Warn("queued command of unknown kind left pending", "id", c.ID, "kind", c.Kind)
				m.warnedCommands[c.ID] = true
			}
			continue
		}
		if ok, _ := m.lease.IsLeader(); !ok {
			return errors.New("lost the leader lease before running a command")
		}
		err := control.ClaimCommand(ctx, m.cfg.Store, m.layout, c.ID, control.Claim{LeaderID: m.ID(), LeaderTerm: term, Claimed: m.now().UTC()})
		if errors.Is(err, store.ErrPrecondition) {
			continue // another leader has it
		}
		if err != nil {
			return err
		}
		m.logger.Info("running command", "id", c.ID, "kind", c.Kind, "term", term)
		if builtin {
			// Long commands run outside the tick; their goroutine writes
			// the result.
			m.startBuiltinCommand(c)
			continue
		}
		res := control.Result{LeaderID: m.ID()}
		if err := run(ctx, c); err != nil {
			res.Error = err.Error()
			m.logger.Error("command failed", "id", c.ID, "kind", c.Kind, "err", err)
		}
		res.Finished = m.now().UTC()
		if err := control.WriteResult(ctx, m.cfg.Store, m.layout, c.ID, res); err != nil {
			return err
		}
	}
	return nil
}
