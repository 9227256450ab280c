package bootstraptoken

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/s3"
	"github.com/kopsnode/agents/pkg/testtools"
)

// fakeClock is a settable clock shared by the issuers of one test.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestIssuerOnFileStore(t *testing.T) { testIssuer(t, newStore(t)) }

func TestIssuerOnMinIO(t *testing.T) {
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	m.CreateBucket(t, "state", false)
	st, err := s3.New(context.Background(), s3.Options{
		Bucket: "state", Prefix: "clusters", Endpoint: m.Endpoint, Region: m.Region, PathStyle: true,
		AccessKey: m.AccessKey, SecretKey: m.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	testIssuer(t, st)
}

// testIssuer runs the life of a cluster's tokens against a real store:
// creation, concurrent rotators that write one token between them, the
// old token kept until it expires, the old format migrated, an unreadable
// object never overwritten, and the expired-token error a worker sees.
func testIssuer(t *testing.T, st store.Store) {
	ctx := context.Background()
	clock := &fakeClock{now: t0}
	issuer := func(cluster string) Issuer {
		return Issuer{Store: st, Cluster: cluster, Now: clock.Now}
	}

	// Concurrent control-plane nodes rotate a cluster that has no token
	// yet: one creates it, every one returns it.
	const n = 6
	results := make([]Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = issuer("c1").Rotate(ctx) })
	}
	wg.Wait()
	created := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("Rotate %d: %v", i, errs[i])
		}
		if r.Tokens.Current != results[0].Tokens.Current {
			t.Fatalf("Rotate %d returned %+v, Rotate 0 %+v", i, r.Tokens.Current, results[0].Tokens.Current)
		}
		if r.Created {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d callers created the token, want 1", created)
	}
	first := results[0].Tokens.Current
	if first.Created != t0 || first.Expires != t0.Add(DefaultTTL) {
		t.Fatalf("first token %+v, want created %v expiring after %s", first, t0, DefaultTTL)
	}

	// Early in its life nothing changes.
	clock.Advance(10 * time.Hour)
	r, err := issuer("c1").Rotate(ctx)
	if err != nil || r.Rotated || r.Created || r.Tokens.Current != first {
		t.Fatalf("Rotate at 10h: %+v, %v", r, err)
	}

	// With less than a third left, concurrent rotators write one new
	// token (compare-and-swap on the version); the first stays as a
	// previous token with its own expiry.
	clock.Advance(7 * time.Hour)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = issuer("c1").Rotate(ctx) })
	}
	wg.Wait()
	rotated := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("Rotate %d: %v", i, errs[i])
		}
		// A rotator that reads after the winner wrote finds a fresh token.
		if r.Tokens.Current != results[0].Tokens.Current {
			t.Fatalf("rotators disagree: %+v vs %+v", r.Tokens.Current, results[0].Tokens.Current)
		}
		if r.Rotated {
			rotated++
		}
	}
	if rotated != 1 {
		t.Fatalf("%d callers rotated, want 1", rotated)
	}
	stored, _, err := ReadTokens(ctx, st, "c1")
	if err != nil {
		t.Fatal(err)
	}
	second := stored.Current
	if second.Token == first.Token || second.Created != t0.Add(17*time.Hour) || len(stored.Previous) != 1 || stored.Previous[0] != first {
		t.Fatalf("after rotation: %+v", stored)
	}
	if got, err := Read(ctx, st, "c1"); err != nil || got != second.Token {
		t.Fatalf("Read = %v, %v; want the new token", got, err)
	}
	if v := stored.Valid(clock.Now()); len(v) != 2 {
		t.Fatalf("valid tokens right after rotation: %+v", v)
	}

	// Ensure never rotates and returns the current token.
	if got, created, err := Ensure(ctx, st, "c1"); err != nil || created || got != second.Token {
		t.Fatalf("Ensure = %v, %v, %v", got, created, err)
	}

	// A worker's read: usable now; expired once the control plane has not
	// rotated for a day, with an error naming the id, expiry and key.
	if i, err := ReadUsable(ctx, st, "c1", clock.Now()); err != nil || i != second {
		t.Fatalf("ReadUsable = %+v, %v", i, err)
	}
	_, err = ReadUsable(ctx, st, "c1", second.Expires.Add(time.Second))
	var expired *ExpiredError
	if !errors.As(err, &expired) || expired.ID != second.Token.ID {
		t.Fatalf("ReadUsable after expiry: %v", err)
	}
	for _, want := range []string{second.Token.ID, second.Expires.Format(time.RFC3339), Key("c1"), "expired"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("expired error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), second.Token.Secret) {
		t.Errorf("expired error shows the secret: %q", err)
	}

	// The next rotation (at 37h: the second token has 4h left) drops the
	// first, which expired at 24h.
	clock.Advance(20 * time.Hour)
	r, err = issuer("c1").Rotate(ctx)
	if err != nil || !r.Rotated || len(r.Tokens.Previous) != 1 || r.Tokens.Previous[0] != second {
		t.Fatalf("rotation after expiry: %+v, %v", r, err)
	}

	// The old format is read and replaced on the next rotation; the old
	// token stays valid for the overlap.
	if _, err := st.Put(ctx, Key("c2"), strings.NewReader("abcdef.0123456789abcdef\n"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	r, err = issuer("c2").Rotate(ctx)
	if err != nil || !r.Rotated || !strings.Contains(r.Decision.Reason, "no expiry") {
		t.Fatalf("rotating an old-format token: %+v, %v", r, err)
	}
	stored, _, err = ReadTokens(ctx, st, "c2")
	if err != nil || len(stored.Previous) != 1 || stored.Previous[0].Token.ID != "abcdef" ||
		stored.Previous[0].Expires != clock.Now().Add(8*time.Hour) {
		t.Fatalf("migrated: %+v, %v", stored, err)
	}

	// An unreadable object is an error naming the key and is never
	// overwritten.
	if _, err := st.Put(ctx, Key("c3"), strings.NewReader(`{"kind":"NodeBootstrapTokens","version":9}`), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := issuer("c3").Rotate(ctx); err == nil || !strings.Contains(err.Error(), "c3/secrets/node-bootstrap-token") || !strings.Contains(err.Error(), "version: 9") {
		t.Fatalf("Rotate over an unreadable object: %v", err)
	}
	b, _, err := store.ReadAll(ctx, st, Key("c3"))
	if err != nil || !strings.Contains(string(b), `"version":9`) {
		t.Fatalf("the unreadable object was changed: %q, %v", b, err)
	}

	// A policy that cannot work is refused before anything is written.
	if _, err := (Issuer{Store: st, Cluster: "c4", Policy: Policy{TTL: time.Second, RotateFraction: 0.5}}).Rotate(ctx); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Fatalf("Rotate with a 1s TTL: %v", err)
	}
	if _, _, err := ReadTokens(ctx, st, "c4"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused policy wrote a token: %v", err)
	}
}
