package gossipkeys

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

const testCluster = "test.k8s.local"

func mustKey(t *testing.T) string {
	t.Helper()
	k, err := NewKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newStore opens a file store on dir (a new one when dir is empty); each
// call is a separate store instance, as separate operators would have.
func newStore(t *testing.T, dir string) store.Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := file.New(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func rootOf(st store.Store) string { return strings.TrimPrefix(st.URL(), "file://") }

// load reads the keyring document as it is stored.
func load(t *testing.T, kr Keyring) membership.KeySet {
	t.Helper()
	ks, _, err := kr.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestNewKeyAndFingerprint(t *testing.T) {
	k := mustKey(t)
	if _, _, err := (membership.KeySet{Primary: k}).Decode("new"); err != nil {
		t.Fatalf("generated key is not a valid gossip key: %v", err)
	}
	if k == mustKey(t) {
		t.Fatal("two generated keys are equal")
	}
	fp := Fingerprint(k)
	if len(fp) != 8 || strings.Trim(fp, "0123456789abcdef") != "" {
		t.Fatalf("fingerprint %q is not 8 hex digits", fp)
	}
	// SHA-256 of 32 zero bytes starts 66687aad.
	if got := Fingerprint("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="); got != "66687aad" {
		t.Fatalf("fingerprint of the zero key = %s, want 66687aad", got)
	}
	if _, err := NewKey(io.LimitReader(rand.Reader, 10)); err == nil {
		t.Fatal("NewKey accepted a short random source")
	}
}

// Each rotation step's resulting document, and the refusals.
func TestApplySteps(t *testing.T) {
	a, b, c := mustKey(t), mustKey(t), mustKey(t)
	cases := []struct {
		name    string
		in      membership.KeySet
		step    Step
		want    membership.KeySet
		changed bool
		refusal string // substring of the refusal; empty when the step is allowed
	}{
		{"add to a lone primary", membership.KeySet{Primary: a}, StepAdd, membership.KeySet{Primary: a, Keys: []string{a, c}}, true, ""},
		{"add to a listed lone primary", membership.KeySet{Primary: a, Keys: []string{a}}, StepAdd, membership.KeySet{Primary: a, Keys: []string{a, c}}, true, ""},
		{"add during a rotation", membership.KeySet{Primary: a, Keys: []string{a, b}}, StepAdd, membership.KeySet{Primary: a, Keys: []string{a, b, c}}, true, ""},
		{"add with the primary unlisted puts it first", membership.KeySet{Primary: a, Keys: []string{b}}, StepAdd, membership.KeySet{Primary: a, Keys: []string{a, b, c}}, true, ""},
		{"use the newest key", membership.KeySet{Primary: a, Keys: []string{a, b}}, StepUse, membership.KeySet{Primary: b, Keys: []string{a, b}}, true, ""},
		{"use after two adds takes the last", membership.KeySet{Primary: a, Keys: []string{a, b, c}}, StepUse, membership.KeySet{Primary: c, Keys: []string{a, b, c}}, true, ""},
		{"use again changes nothing", membership.KeySet{Primary: b, Keys: []string{a, b}}, StepUse, membership.KeySet{Primary: b, Keys: []string{a, b}}, false, ""},
		{"remove the old keys", membership.KeySet{Primary: c, Keys: []string{a, b, c}}, StepRemove, membership.KeySet{Primary: c}, true, ""},
		{"use with one key", membership.KeySet{Primary: a}, StepUse, membership.KeySet{}, false, "run --step add first"},
		{"remove with one key", membership.KeySet{Primary: a, Keys: []string{a}}, StepRemove, membership.KeySet{}, false, "a rotation starts with --step add"},
		{"remove before use", membership.KeySet{Primary: a, Keys: []string{a, b}}, StepRemove, membership.KeySet{}, false, "run --step use first"},
		{"use with the primary unlisted", membership.KeySet{Primary: a, Keys: []string{b}}, StepUse, membership.KeySet{}, false, "which key is newest is unknown"},
		{"remove with the primary unlisted", membership.KeySet{Primary: a, Keys: []string{b}}, StepRemove, membership.KeySet{}, false, "which key is newest is unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, changed, err := Apply(tc.in, tc.step, c)
			if tc.refusal != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.refusal) {
					t.Fatalf("err = %v, want a refusal saying %q", err, tc.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.changed || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v changed=%v, want %+v changed=%v", got, changed, tc.want, tc.changed)
			}
		})
	}
	if _, _, err := Apply(membership.KeySet{Primary: a}, StepAdd, a); err == nil {
		t.Fatal("adding a key already in the ring was accepted")
	}
	if _, _, err := Apply(membership.KeySet{Primary: a}, StepAdd, "bm90IGEga2V5"); err == nil {
		t.Fatal("adding an invalid key was accepted")
	}
}

func TestCreateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	kr := ForCluster(newStore(t, ""), testCluster)
	first, err := kr.Create(ctx, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Changed || first.Keyring.NumKeys != 1 || first.Keyring.Next != StepAdd {
		t.Fatalf("first create = %+v, want a new keyring with one key", first)
	}
	before, infoBefore, err := store.ReadAll(ctx, kr.Store, kr.Key)
	if err != nil {
		t.Fatal(err)
	}
	second, err := kr.Create(ctx, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if second.Changed || second.Keyring.Primary != first.Keyring.Primary {
		t.Fatalf("second create = %+v, want unchanged with primary %s", second, first.Keyring.Primary)
	}
	after, infoAfter, err := store.ReadAll(ctx, kr.Store, kr.Key)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) || infoBefore.Version != infoAfter.Version {
		t.Fatal("second create changed the keyring")
	}
	if ks := load(t, kr); Fingerprint(ks.Primary) != first.Keyring.Primary || len(ks.Keys) != 0 {
		t.Fatalf("stored keyring %d keys, primary %s; want only primary %s", len(ks.Keys), Fingerprint(ks.Primary), first.Keyring.Primary)
	}
}

// An existing keyring that cannot be parsed is reported, not replaced.
func TestCreateOverBrokenKeyringFails(t *testing.T) {
	ctx := context.Background()
	kr := ForCluster(newStore(t, ""), testCluster)
	if _, err := kr.Store.Put(ctx, kr.Key, strings.NewReader("primary: [not a key\n"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	_, err := kr.Create(ctx, rand.Reader)
	if err == nil || !strings.Contains(err.Error(), kr.URL()) || !strings.Contains(err.Error(), "exists but cannot be used") {
		t.Fatalf("err = %v, want one naming %s", err, kr.URL())
	}
	b, _, _ := store.ReadAll(ctx, kr.Store, kr.Key)
	if string(b) != "primary: [not a key\n" {
		t.Fatalf("broken keyring was replaced by %q", b)
	}
}

func TestRotateFullCycle(t *testing.T) {
	ctx := context.Background()
	kr := ForCluster(newStore(t, ""), testCluster)
	created, err := kr.Create(ctx, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	old := load(t, kr).Primary

	add, err := kr.Rotate(ctx, StepAdd, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ks := load(t, kr)
	if ks.Primary != old || len(ks.Keys) != 2 || ks.Keys[0] != old || Fingerprint(ks.Keys[1]) != add.Added {
		t.Fatalf("after add: primary %s keys %d, want primary %s and keys [old, %s]", Fingerprint(ks.Primary), len(ks.Keys), created.Keyring.Primary, add.Added)
	}
	newK := ks.Keys[1]
	if add.Keyring.Next != StepUse || add.Keyring.Primary != created.Keyring.Primary {
		t.Fatalf("after add the summary says %+v", add.Keyring)
	}

	use, err := kr.Rotate(ctx, StepUse, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if want := (membership.KeySet{Primary: newK, Keys: []string{old, newK}}); !reflect.DeepEqual(load(t, kr), want) {
		t.Fatal("after use: the new key is not the primary with both keys listed")
	}
	if !use.Changed || use.Keyring.Primary != add.Added || use.Keyring.Next != StepRemove {
		t.Fatalf("use result %+v", use)
	}
	again, err := kr.Rotate(ctx, StepUse, rand.Reader)
	if err != nil || again.Changed {
		t.Fatalf("second use = %+v, %v; want no change", again, err)
	}

	rm, err := kr.Rotate(ctx, StepRemove, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if want := (membership.KeySet{Primary: newK}); !reflect.DeepEqual(load(t, kr), want) {
		t.Fatal("after remove: the new key is not the only key")
	}
	if !reflect.DeepEqual(rm.Removed, []string{created.Keyring.Primary}) || rm.Keyring.NumKeys != 1 || rm.Keyring.Next != StepAdd {
		t.Fatalf("remove result %+v", rm)
	}
}

func TestRotateRefusalsNameStoreAndStep(t *testing.T) {
	ctx := context.Background()
	kr := ForCluster(newStore(t, ""), testCluster)
	_, err := kr.Rotate(ctx, StepAdd, rand.Reader)
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), kr.URL()) || !strings.Contains(err.Error(), "gossip-keys create") {
		t.Fatalf("rotate without a keyring: %v", err)
	}
	if _, err := kr.Create(ctx, rand.Reader); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		step Step
		want string
	}{{StepUse, "--step add first"}, {StepRemove, "--step add"}} {
		before, infoBefore, _ := store.ReadAll(ctx, kr.Store, kr.Key)
		_, err := kr.Rotate(ctx, tc.step, rand.Reader)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), kr.URL()) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s with one key: %v; want a refusal naming %s and %q", tc.step, err, kr.URL(), tc.want)
		}
		after, infoAfter, _ := store.ReadAll(ctx, kr.Store, kr.Key)
		if string(before) != string(after) || infoBefore.Version != infoAfter.Version {
			t.Fatalf("refused %s changed the keyring", tc.step)
		}
	}
	if _, err := kr.Rotate(ctx, StepAdd, rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Rotate(ctx, StepRemove, rand.Reader); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--step use first") {
		t.Fatalf("remove before use: %v", err)
	}
	if n := len(load(t, kr).Keys); n != 2 {
		t.Fatalf("refused remove left %d keys, want 2", n)
	}
}

// racingStore lets a test run another writer between a rotation's read
// and its conditional write.
type racingStore struct {
	store.Store
	mu     sync.Mutex
	before func(n int) // called before the nth Put (from 1)
	puts   int
}

func (r *racingStore) Put(ctx context.Context, key string, rd io.Reader, cond store.Condition) (store.Info, error) {
	r.mu.Lock()
	r.puts++
	n := r.puts
	r.mu.Unlock()
	if r.before != nil {
		r.before(n)
	}
	return r.Store.Put(ctx, key, rd, cond)
}

// A write between our read and our write makes the compare-and-swap fail;
// the step re-reads and both added keys survive.
func TestRotateRetriesAfterConflict(t *testing.T) {
	ctx := context.Background()
	base := newStore(t, "")
	other := ForCluster(newStore(t, rootOf(base)), testCluster)
	if _, err := other.Create(ctx, rand.Reader); err != nil {
		t.Fatal(err)
	}
	var theirs string
	rs := &racingStore{Store: base, before: func(n int) {
		if n != 1 {
			return
		}
		res, err := other.Rotate(ctx, StepAdd, rand.Reader)
		if err != nil {
			t.Error(err)
		}
		theirs = res.Added
	}}
	ours, err := ForCluster(rs, testCluster).Rotate(ctx, StepAdd, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if ours.Attempts != 2 {
		t.Fatalf("attempts = %d, want 2 (one conflict)", ours.Attempts)
	}
	sum, err := other.Show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range sum.Keys {
		got = append(got, k.Fingerprint)
	}
	if len(got) != 3 || got[1] != theirs || got[2] != ours.Added {
		t.Fatalf("keys %v, want [primary %s %s]", got, theirs, ours.Added)
	}
}

// When every attempt loses the race, the step fails cleanly, writes
// nothing, and the other writers' keys are all kept.
func TestRotateConflictExhaustedIsCleanError(t *testing.T) {
	ctx := context.Background()
	base := newStore(t, "")
	other := ForCluster(newStore(t, rootOf(base)), testCluster)
	if _, err := other.Create(ctx, rand.Reader); err != nil {
		t.Fatal(err)
	}
	var theirs []string
	rs := &racingStore{Store: base, before: func(int) {
		res, err := other.Rotate(ctx, StepAdd, rand.Reader)
		if err != nil {
			t.Error(err)
		}
		theirs = append(theirs, res.Added)
	}}
	kr := ForCluster(rs, testCluster)
	kr.Attempts = 3
	_, err := kr.Rotate(ctx, StepAdd, rand.Reader)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), kr.URL()) || !strings.Contains(err.Error(), "wrote nothing") {
		t.Fatalf("err = %v, want a conflict error naming %s", err, kr.URL())
	}
	sum, err := other.Show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.NumKeys != 1+len(theirs) || len(theirs) != 3 {
		t.Fatalf("keyring has %d keys after %d competing adds; want %d", sum.NumKeys, len(theirs), 1+len(theirs))
	}
	for i, fp := range theirs {
		if sum.Keys[1+i].Fingerprint != fp {
			t.Fatalf("competing key %d (%s) lost: keys %+v", i, fp, sum.Keys)
		}
	}
}

// Concurrent adds from separate store instances: each success is in the
// final document, failures are clean conflict errors, nothing is lost.
func TestConcurrentAddsLoseNoUpdate(t *testing.T) {
	for _, n := range []int{2, 8} {
		t.Run(fmt.Sprintf("%d-adders", n), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			if _, err := ForCluster(newStore(t, dir), testCluster).Create(ctx, rand.Reader); err != nil {
				t.Fatal(err)
			}
			krs := make([]Keyring, n)
			for i := range krs {
				krs[i] = ForCluster(newStore(t, dir), testCluster)
			}
			results := make([]Result, n)
			errs := make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range krs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					results[i], errs[i] = krs[i].Rotate(ctx, StepAdd, rand.Reader)
				}()
			}
			close(start)
			wg.Wait()
			sum, err := krs[0].Show(ctx)
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, k := range sum.Keys {
				have[k.Fingerprint] = true
			}
			ok := 0
			for i := range krs {
				if errs[i] != nil {
					if !errors.Is(errs[i], ErrConflict) {
						t.Fatalf("adder %d: %v, want success or a conflict error", i, errs[i])
					}
					continue
				}
				ok++
				if !have[results[i].Added] {
					t.Fatalf("adder %d's key %s was lost; keyring %+v", i, results[i].Added, sum.Keys)
				}
			}
			if ok == 0 || sum.NumKeys != 1+ok {
				t.Fatalf("%d adds succeeded, keyring has %d keys; want %d", ok, sum.NumKeys, 1+ok)
			}
			if n == 2 && ok != 2 {
				t.Fatalf("only %d of 2 concurrent adds succeeded with %d attempts each", ok, DefaultAttempts)
			}
		})
	}
}
