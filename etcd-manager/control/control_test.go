package control

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

func newStore(t *testing.T) store.Store {
	t.Helper()
	s, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var layout = Layout{Cluster: "c.example", EtcdCluster: "main"}

func TestLayoutKeys(t *testing.T) {
	if got, want := layout.SpecKey(), "c.example/backups/etcd/main/control/etcd-cluster-spec"; got != want {
		t.Errorf("SpecKey = %q, want %q", got, want)
	}
	if got, want := layout.CreatedKey(), "c.example/backups/etcd/main/control/etcd-cluster-created"; got != want {
		t.Errorf("CreatedKey = %q, want %q", got, want)
	}
	if err := (Layout{Cluster: "a/b", EtcdCluster: ""}).Validate(); err == nil || !strings.Contains(err.Error(), "etcd cluster name is empty") || !strings.Contains(err.Error(), `"a/b"`) {
		t.Errorf("Validate of bad layout = %v", err)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{MemberCount: 3, EtcdVersion: "3.6.16"}, ""},
		{Spec{MemberCount: 2, EtcdVersion: "3.6.16"}, "memberCount: 2 is not one of 1, 3, 5"},
		{Spec{MemberCount: 0, EtcdVersion: "3.6.16"}, "memberCount: 0"},
		{Spec{MemberCount: 1, EtcdVersion: "latest"}, `etcdVersion: "latest" is not a valid etcd version`},
		// The one version rule of pkg/config: supported minor versions only.
		{Spec{MemberCount: 1, EtcdVersion: "2.3.8"}, `etcdVersion: "2.3.8" is not a supported etcd version`},
		{Spec{MemberCount: 1, EtcdVersion: "3.4.23"}, `etcdVersion: "3.4.23" is not a supported etcd version`},
	} {
		err := tc.spec.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: unexpected error %v", tc.spec, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to contain %q", tc.spec, err, tc.want)
		}
	}
}

func TestSpecRoundTripAndBadSpecInStore(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	if _, err := ReadSpec(ctx, st, layout); !errors.Is(err, ErrNoSpec) {
		t.Fatalf("ReadSpec of empty store = %v, want ErrNoSpec", err)
	}
	if err := WriteSpec(ctx, st, layout, Spec{MemberCount: 4, EtcdVersion: "3.6.16"}); err == nil {
		t.Fatal("WriteSpec accepted 4 members")
	}
	want := Spec{MemberCount: 3, EtcdVersion: "3.6.16"}
	if err := WriteSpec(ctx, st, layout, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSpec(ctx, st, layout)
	if err != nil || got != want {
		t.Fatalf("ReadSpec = %+v, %v; want %+v", got, err, want)
	}
	// An impossible count written behind our back is an error naming the object.
	if _, err := st.Put(ctx, layout.SpecKey(), strings.NewReader(`{"memberCount": 7, "etcdVersion": "3.6.16"}`), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	_, err = ReadSpec(ctx, st, layout)
	if err == nil || !strings.Contains(err.Error(), "etcd-cluster-spec") || !strings.Contains(err.Error(), "memberCount: 7") {
		t.Fatalf("ReadSpec of bad spec = %v", err)
	}
	if _, err := st.Put(ctx, layout.SpecKey(), strings.NewReader(`{"members": 3}`), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSpec(ctx, st, layout); err == nil || !strings.Contains(err.Error(), "members") {
		t.Fatalf("ReadSpec with unknown field = %v", err)
	}
}

// TestCreateClusterIsFenced: of many concurrent creators exactly one wins.
func TestCreateClusterIsFenced(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := map[string]bool{}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := string(rune('a' + i))
			err := CreateCluster(ctx, st, layout, Created{ClusterToken: "tok-" + id, CreatedBy: id, Created: time.Now()})
			if err == nil {
				mu.Lock()
				wins[id] = true
				mu.Unlock()
			} else if !errors.Is(err, ErrAlreadyCreated) {
				t.Errorf("creator %s: %v", id, err)
			}
		}(i)
	}
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("%d creators won: %v", len(wins), wins)
	}
	c, ok, err := ReadCreated(ctx, st, layout)
	if err != nil || !ok || !wins[c.CreatedBy] || c.ClusterToken != "tok-"+c.CreatedBy {
		t.Fatalf("ReadCreated = %+v, %v, %v; winners %v", c, ok, err, wins)
	}
}

func TestCommandsClaimedOnce(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	if err := QueueCommand(ctx, st, layout, Command{ID: "0001-backup", Kind: "backup"}); err != nil {
		t.Fatal(err)
	}
	if err := QueueCommand(ctx, st, layout, Command{ID: "0001-backup", Kind: "backup"}); err == nil {
		t.Fatal("queued the same command id twice")
	}
	if err := QueueCommand(ctx, st, layout, Command{ID: "a/b"}); err == nil {
		t.Fatal("accepted a command id with a slash")
	}
	cmds, err := PendingCommands(ctx, st, layout)
	if err != nil || len(cmds) != 1 || cmds[0].Kind != "backup" {
		t.Fatalf("PendingCommands = %+v, %v", cmds, err)
	}
	if err := ClaimCommand(ctx, st, layout, "0001-backup", Claim{LeaderID: "a", LeaderTerm: 1}); err != nil {
		t.Fatal(err)
	}
	if err := ClaimCommand(ctx, st, layout, "0001-backup", Claim{LeaderID: "b", LeaderTerm: 2}); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("second claim = %v, want ErrPrecondition", err)
	}
	if cmds, err := PendingCommands(ctx, st, layout); err != nil || len(cmds) != 0 {
		t.Fatalf("PendingCommands after claim = %+v, %v", cmds, err)
	}
}

func TestSeedSpecCreateIfAbsent(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	l := Layout{Cluster: "c", EtcdCluster: "main"}
	created, err := SeedSpec(ctx, st, l, Spec{MemberCount: 3, EtcdVersion: "3.6.16"})
	if err != nil || !created {
		t.Fatalf("first seed: created %t, %v", created, err)
	}
	if err := WriteSpec(ctx, st, l, Spec{MemberCount: 5, EtcdVersion: "3.6.16"}); err != nil {
		t.Fatal(err)
	}
	created, err = SeedSpec(ctx, st, l, Spec{MemberCount: 1, EtcdVersion: "3.5.21"})
	if err != nil || created {
		t.Fatalf("second seed: created %t, %v", created, err)
	}
	if s, err := ReadSpec(ctx, st, l); err != nil || s.MemberCount != 5 {
		t.Fatalf("spec = %+v, %v; want the operator's 5 members", s, err)
	}
	if _, err := SeedSpec(ctx, st, Layout{Cluster: "c", EtcdCluster: "events"}, Spec{MemberCount: 1, EtcdVersion: "3.4.1"}); err == nil {
		t.Fatal("an unsupported version was seeded")
	}
}
