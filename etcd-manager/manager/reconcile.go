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
	"time"

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
	if handled, err := m.quorumLossTick(ctx, spec, infos); handled {
		return err
	}
	wasLeader, heldTerm := m.lease.IsLeader()
	want, why := leaseIntent(self.ID, infos, spec.MemberCount, wasLeader, m.expiredHolder())
	m.elect.candidate.Store(want && !wasLeader)
	if why != "" {
		m.stepDown(ctx, why)
		if _, err := m.lease.Observe(ctx); err != nil {
			return err
		}
		m.setLeader(false, 0)
		m.markReconciled()
		return nil
	}
	// The keeper renews a held lease and observes it otherwise; the tick
	// only takes it.
	isLeader, term := wasLeader, heldTerm
	if want && !wasLeader {
		isLeader, term, err = m.lease.Acquire(ctx)
		if err != nil {
			m.setLeader(false, 0)
			return err
		}
		m.elect.candidate.Store(!isLeader)
	}
	m.mu.Lock()
	led := m.status.IsLeader
	if isLeader && !led {
		m.leaderSince = m.now()
	}
	m.mu.Unlock()
	if isLeader && !led {
		m.logger.Info("became leader", "term", term, "reachablePeers", len(infos))
	}
	if !isLeader && led {
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

// reconcile converges the etcd cluster on spec. It observes (observe),
// lets the pure decide pick at most one change, and carries it out (act);
// the next tick sees the result.
func (m *Manager) reconcile(ctx context.Context, spec control.Spec, infos map[string]peer.Info, term int64) error {
	// A restore in progress owns the cluster: no membership change, no
	// member counted dead (restore.go).
	if busy, err := m.restoreGate(ctx, term); busy {
		return err
	}
	obs, c, err := m.observe(ctx, spec, infos)
	if err != nil {
		return err
	}
	d := decide(obs, spec, m.now(), m.cfg.decideConfig(m.layout))
	if d.Action != ActRunCommands {
		m.logger.Debug("reconcile decision", "action", d.Action.String(), "target", d.Target, "reason", d.Reason)
	}
	return m.act(ctx, c, spec, obs, d, term)
}

// observe gathers what decide needs beyond the peers' infos: the created
// marker, etcd's member list through the healthy members (with a client
// act uses), whether the cluster ever answered, how long each member has
// been unhealthy, and which etcd binaries are installed. It also keeps the
// backup source, status and metrics current.
func (m *Manager) observe(ctx context.Context, spec control.Spec, infos map[string]peer.Info) (Observation, *clientv3.Client, error) {
	obs := Observation{Self: m.ID(), Infos: infos, Binaries: map[string]error{}}
	m.mu.Lock()
	obs.LeaderSince = m.leaderSince
	m.mu.Unlock()
	created, ok, err := control.ReadCreated(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return obs, nil, err
	}
	if !ok {
		m.setBackupSource(nil)
		m.checkBinary(obs.Binaries, spec.EtcdVersion)
		return obs, nil, nil
	}
	obs.Created = &created
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
				if id == obs.Self {
					src.targets = append([]backupTarget{tg}, src.targets...)
				} else {
					src.targets = append(src.targets, tg)
				}
			}
		}
	}
	m.setBackupSource(src)
	if len(endpoints) == 0 {
		if !m.bootstrapped {
			b, err := control.IsBootstrapped(ctx, m.cfg.Store, m.layout)
			if err != nil {
				return obs, nil, err
			}
			m.bootstrapped = b
		}
		obs.Bootstrapped = m.bootstrapped
		return obs, nil, nil
	}
	c, err := m.clusterClient(endpoints)
	if err != nil {
		return obs, nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
	resp, err := c.MemberList(lctx)
	cancel()
	if err != nil {
		return obs, nil, fmt.Errorf("listing etcd members via %v: %w", endpoints, err)
	}
	if !m.bootstrapped {
		if err := control.MarkBootstrapped(ctx, m.cfg.Store, m.layout, obs.Self); err != nil {
			return obs, nil, err
		}
		m.bootstrapped = true
	}
	obs.Bootstrapped = true
	obs.Listed = true
	obs.Members = resp.Members
	cv := viewMembers(resp.Members, infos, created.EtcdVersion)
	obs.UnhealthySince = m.trackHealth(cv, m.now())
	m.checkBinary(obs.Binaries, cv.version)
	return obs, c, nil
}

func (m *Manager) checkBinary(into map[string]error, version string) {
	_, err := etcdprocess.BinaryPath(m.cfg.BinDirRoot, version)
	into[version] = err
}

// trackHealth records when each member was first seen unhealthy (forgetting
// healthy and removed members), updates status and metrics, and returns a
// copy of the record for decide.
func (m *Manager) trackHealth(cv clusterView, now time.Time) map[string]time.Time {
	m.met.setCluster(len(cv.views), countHealthy(cv.views), cv.version)
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	m.status.Members = nil
	for _, v := range cv.views {
		key := v.key()
		seen[key] = true
		if v.healthy {
			delete(m.unhealthySince, key)
		} else if _, ok := m.unhealthySince[key]; !ok {
			m.unhealthySince[key] = now
		}
		m.status.Members = append(m.status.Members, MemberStatus{Name: v.name, ID: key, PeerURLs: v.member.PeerURLs, ClientURLs: v.member.ClientURLs, Learner: v.member.IsLearner, Healthy: v.healthy})
	}
	out := map[string]time.Time{}
	for k, t := range m.unhealthySince {
		if !seen[k] {
			delete(m.unhealthySince, k)
			continue
		}
		out[k] = t
	}
	m.status.EtcdVersion = cv.version
	return out
}

// act carries out a decision. c is the cluster client observe made (nil
// when etcd's member list was not read).
func (m *Manager) act(ctx context.Context, c *clientv3.Client, spec control.Spec, obs Observation, d Decision, term int64) error {
	leaderID, leaderTerm := obs.Self, term
	switch d.Action {
	case ActWait:
		return nil
	case ActRefuse:
		return d.Err
	case ActCreate:
		return m.createCluster(ctx, d, obs.Infos, term)
	case ActResendJoins:
		return m.sendCreateJoins(ctx, *obs.Created, obs.Infos, term)
	case ActLeave:
		m.logger.Info("peer is not a member of the cluster; telling it to leave", "peer", d.Target, "token", d.Token)
		if err := m.leave(ctx, obs.Infos[d.Target], peer.LeaveRequest{LeaderID: leaderID, LeaderTerm: leaderTerm, ClusterToken: d.Token}); err != nil {
			m.logger.Warn("telling peer to leave", "peer", d.Target, "err", err)
		}
		return nil
	case ActJoinLearner:
		return m.join(ctx, obs.Infos[d.Target], peer.JoinRequest{LeaderID: leaderID, LeaderTerm: leaderTerm, ClusterToken: obs.Created.ClusterToken, EtcdVersion: d.Version, InitialCluster: d.InitialCluster, State: "existing"})
	case ActPromote:
		pctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
		_, err := c.MemberPromote(pctx, d.MemberID)
		cancel()
		if err != nil {
			// etcd refuses until the learner caught up; tried again next tick.
			m.logger.Debug("learner not promoted yet", "member", d.Target, "err", err)
			return nil
		}
		m.logger.Info("promoted learner", "member", d.Target)
		return nil
	case ActRemove:
		return m.removeMember(ctx, c, obs, d, term)
	case ActRotate:
		m.logger.Info("rotating etcd certificates", "member", d.Target, "notAfter", obs.Infos[d.Target].CertNotAfter)
		return m.rotate(ctx, obs.Infos[d.Target], peer.RotateRequest{LeaderID: leaderID, LeaderTerm: leaderTerm})
	case ActAddLearner:
		return m.addLearner(ctx, c, obs, d, term)
	case ActRunCommands:
		if d.Warn != "" {
			m.logger.Warn("spec names another etcd version than the cluster runs; upgrades are not implemented yet", "spec", spec.EtcdVersion, "running", d.Version)
		}
		return m.runCommands(ctx, term)
	}
	return fmt.Errorf("reconcile: unknown decision %s", d.Action)
}

// removeMember removes an etcd member after a fresh backup, and tells its
// instance, if reachable and a member, to leave.
func (m *Manager) removeMember(ctx context.Context, c *clientv3.Client, obs Observation, d Decision, term int64) error {
	if ok, _ := m.lease.IsLeader(); !ok {
		return errors.New("lost the leader lease before removing a member")
	}
	if !m.backupBeforeChange("before removing member " + d.Target) {
		return nil
	}
	m.logger.Info("removing etcd member", "member", d.Target, "id", strconv.FormatUint(d.MemberID, 16), "why", d.Reason)
	rctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
	defer cancel()
	if _, err := c.MemberRemove(rctx, d.MemberID); err != nil {
		return fmt.Errorf("removing member %s: %w", d.Target, err)
	}
	if i, ok := obs.Infos[d.Target]; ok && i.ClusterToken != "" {
		if err := m.leave(ctx, i, peer.LeaveRequest{LeaderID: obs.Self, LeaderTerm: term, ClusterToken: i.ClusterToken}); err != nil {
			m.logger.Warn("telling removed member to leave", "member", d.Target, "err", err)
		}
	}
	return nil
}

// addLearner adds an idle peer as a learner after a fresh backup and tells
// it to join the cluster as etcd now lists it.
func (m *Manager) addLearner(ctx context.Context, c *clientv3.Client, obs Observation, d Decision, term int64) error {
	n := obs.Infos[d.Target]
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
	// The new member has no name until it starts: name it here so the
	// initial cluster lists it.
	cv := viewMembers(resp.Members, obs.Infos, d.Version)
	for i := range cv.views {
		if cv.views[i].member.ID == resp.Member.ID {
			cv.views[i].name = n.ID
		}
	}
	return m.join(ctx, n, peer.JoinRequest{LeaderID: obs.Self, LeaderTerm: term, ClusterToken: obs.Created.ClusterToken, EtcdVersion: d.Version, InitialCluster: cv.initialCluster(), State: "existing"})
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

// createCluster writes the created marker for the members decide chose
// (create-if-absent: the fence against a second leader) and tells them to
// join with initial-cluster-state=new.
func (m *Manager) createCluster(ctx context.Context, d Decision, infos map[string]peer.Info, term int64) error {
	token, err := newToken()
	if err != nil {
		return err
	}
	created := control.Created{ClusterToken: token, EtcdVersion: d.Version, CreatedBy: m.ID(), LeaderTerm: term, Created: m.now().UTC(), InitialMembers: d.Members}
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
	m.logger.Info("creating etcd cluster", "token", token, "members", len(d.Members), "version", d.Version)
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
