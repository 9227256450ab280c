package bootstraptoken

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/kopsnode/agents/pkg/store"
)

// StoreKey is the tokens' key under <cluster>/ in the state store.
const StoreKey = "secrets/node-bootstrap-token"

// Key returns the tokens' full key in the store for a cluster.
func Key(cluster string) string { return path.Join(cluster, StoreKey) }

// Kind and FormatVersion identify the stored document. The object written
// before tokens expired held only "<id>.<secret>"; Decode still reads it.
const (
	Kind          = "NodeBootstrapTokens"
	FormatVersion = 1
)

type storedToken struct {
	Token   string    `json:"token"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

type storedTokens struct {
	Kind     string        `json:"kind"`
	Version  int           `json:"version"`
	Current  storedToken   `json:"current"`
	Previous []storedToken `json:"previous,omitempty"`
}

// Encode renders ts as the stored JSON document.
func Encode(ts Tokens) ([]byte, error) {
	if _, err := Parse(ts.Current.Token.String()); err != nil {
		return nil, fmt.Errorf("current: %w", err)
	}
	doc := storedTokens{Kind: Kind, Version: FormatVersion, Current: toStored(ts.Current)}
	for _, p := range ts.Previous {
		doc.Previous = append(doc.Previous, toStored(p))
	}
	// Refuse what Decode would refuse, so that nothing unreadable is
	// ever written.
	for n, st := range append([]storedToken{doc.Current}, doc.Previous...) {
		if _, err := fromStored(st); err != nil {
			return nil, fmt.Errorf("token %d of %d: %w", n+1, 1+len(doc.Previous), err)
		}
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func toStored(i Issued) storedToken {
	return storedToken{Token: i.Token.String(), Created: i.Created.UTC(), Expires: i.Expires.UTC()}
}

// Decode reads the stored document, or the old bare "<id>.<secret>" (a
// token without expiry). Errors name the field.
func Decode(b []byte) (Tokens, error) {
	s := strings.TrimSpace(string(b))
	if !strings.HasPrefix(s, "{") {
		t, err := Parse(s)
		if err != nil {
			return Tokens{}, err
		}
		return Tokens{Current: Issued{Token: t}}, nil
	}
	var doc storedTokens
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return Tokens{}, fmt.Errorf("decoding %s: %w", Kind, err)
	}
	var errs []error
	if doc.Kind != Kind {
		errs = append(errs, fmt.Errorf("kind: %q, want %q", doc.Kind, Kind))
	}
	if doc.Version != FormatVersion {
		errs = append(errs, fmt.Errorf("version: %d is not supported (this build reads %d)", doc.Version, FormatVersion))
	}
	var ts Tokens
	var err error
	if ts.Current, err = fromStored(doc.Current); err != nil {
		errs = append(errs, fmt.Errorf("current.%w", err))
	}
	for n, p := range doc.Previous {
		i, err := fromStored(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("previous[%d].%w", n, err))
		}
		ts.Previous = append(ts.Previous, i)
	}
	if err := errors.Join(errs...); err != nil {
		return Tokens{}, err
	}
	return ts, nil
}

func fromStored(s storedToken) (Issued, error) {
	t, err := Parse(s.Token)
	if err != nil {
		return Issued{}, fmt.Errorf("token: %w", err)
	}
	if s.Expires.IsZero() || !s.Expires.After(s.Created) {
		return Issued{}, fmt.Errorf("expires: %s is not after created %s", s.Expires.Format(time.RFC3339), s.Created.Format(time.RFC3339))
	}
	return Issued{Token: t, Created: s.Created, Expires: s.Expires}, nil
}

// ReadTokens reads the cluster's tokens and the object's version. A missing
// object wraps store.ErrNotFound; every error names the URL.
func ReadTokens(ctx context.Context, st store.Store, cluster string) (Tokens, store.Version, error) {
	b, info, err := store.ReadAll(ctx, st, Key(cluster))
	if err != nil {
		return Tokens{}, "", fmt.Errorf("reading the node bootstrap token: %w", err)
	}
	ts, err := Decode(b)
	if err != nil {
		return Tokens{}, "", fmt.Errorf("%s: %w", store.JoinURL(st.URL(), Key(cluster)), err)
	}
	return ts, info.Version, nil
}

// Read reads the cluster's current token, expired or not. A missing token
// wraps store.ErrNotFound and names the URL.
func Read(ctx context.Context, st store.Store, cluster string) (Token, error) {
	ts, _, err := ReadTokens(ctx, st, cluster)
	return ts.Current.Token, err
}

// ExpiredError says that the store's current token has expired: the control
// plane has not replaced it (no control-plane node is running protokube
// manifests, or it cannot write to the store).
type ExpiredError struct {
	ID      string
	Expires time.Time
	URL     string
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("node bootstrap token %s at %s expired at %s; a control-plane node (protokube manifests) replaces it, so check that one runs and can write to the store",
		e.ID, e.URL, e.Expires.UTC().Format(time.RFC3339))
}

// ReadUsable reads the cluster's current token and fails with an
// *ExpiredError when it has expired at now: what a joining machine uses.
func ReadUsable(ctx context.Context, st store.Store, cluster string, now time.Time) (Issued, error) {
	ts, _, err := ReadTokens(ctx, st, cluster)
	if err != nil {
		return Issued{}, err
	}
	if ts.Current.Expired(now) {
		return Issued{}, &ExpiredError{ID: ts.Current.Token.ID, Expires: ts.Current.Expires, URL: store.JoinURL(st.URL(), Key(cluster))}
	}
	return ts.Current, nil
}

// Issuer creates and rotates a cluster's tokens in the store. Every write
// is conditional (create-if-absent, or compare-and-swap on the version it
// read), so control-plane nodes that act at once write one token between
// them; the others read the winner's.
type Issuer struct {
	Store   store.Store
	Cluster string
	// Policy of new tokens and rotation; the zero value is DefaultPolicy.
	Policy Policy
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Rand supplies new tokens; nil: crypto/rand.
	Rand io.Reader
}

// Result is what an Issuer call found or did.
type Result struct {
	// Tokens are the stored tokens after the call.
	Tokens Tokens
	// Created: this call wrote the cluster's first token.
	Created bool
	// Rotated: this call replaced the current token.
	Rotated bool
	// Decision is the rotation decision (Rotate calls only).
	Decision Decision
}

func (is Issuer) policy() Policy {
	if is.Policy == (Policy{}) {
		return DefaultPolicy()
	}
	return is.Policy
}

func (is Issuer) now() time.Time {
	if is.Now == nil {
		return time.Now()
	}
	return is.Now()
}

func (is Issuer) generate() (Token, error) {
	if is.Rand == nil {
		return Generate()
	}
	return generate(is.Rand)
}

func (is Issuer) url() string { return store.JoinURL(is.Store.URL(), Key(is.Cluster)) }

// Ensure creates the cluster's first token when there is none, and
// otherwise changes nothing (an expired token is left to Rotate).
func (is Issuer) Ensure(ctx context.Context) (Result, error) {
	return is.run(ctx, false)
}

// Rotate creates the first token when there is none, and replaces the
// current one when Decide says so. A stored object it cannot read is an
// error and is never overwritten (it may come from a newer version).
func (is Issuer) Rotate(ctx context.Context) (Result, error) {
	return is.run(ctx, true)
}

func (is Issuer) run(ctx context.Context, rotate bool) (Result, error) {
	if err := is.policy().Validate(); err != nil {
		return Result{}, fmt.Errorf("node bootstrap token policy: %w", err)
	}
	ts, version, err := ReadTokens(ctx, is.Store, is.Cluster)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return is.create(ctx)
	case err != nil:
		return Result{}, err
	}
	if !rotate {
		return Result{Tokens: ts}, nil
	}
	now := is.now()
	d := Decide(now, ts.Current, is.policy())
	if !d.Rotate {
		return Result{Tokens: ts, Decision: d}, nil
	}
	t, err := is.generate()
	if err != nil {
		return Result{}, err
	}
	next := Next(now, ts, t, is.policy())
	stored, won, err := is.put(ctx, next, store.Condition{IfVersion: version}, "rotating")
	if err != nil {
		return Result{}, err
	}
	return Result{Tokens: stored, Rotated: won, Decision: d}, nil
}

func (is Issuer) create(ctx context.Context) (Result, error) {
	t, err := is.generate()
	if err != nil {
		return Result{}, err
	}
	ts := New(is.now(), t, is.policy())
	stored, won, err := is.put(ctx, ts, store.Condition{IfAbsent: true}, "creating")
	if err != nil {
		return Result{}, err
	}
	return Result{Tokens: stored, Created: won}, nil
}

// put writes ts under cond and returns what the store holds after it:
// ts, or, when another writer got there first, the winner's tokens (won
// false).
func (is Issuer) put(ctx context.Context, ts Tokens, cond store.Condition, what string) (Tokens, bool, error) {
	b, err := Encode(ts)
	if err != nil {
		return Tokens{}, false, fmt.Errorf("%s the node bootstrap token at %s: %w", what, is.url(), err)
	}
	_, err = is.Store.Put(ctx, Key(is.Cluster), bytes.NewReader(b), cond)
	if err == nil {
		return ts, true, nil
	}
	if !errors.Is(err, store.ErrPrecondition) {
		return Tokens{}, false, fmt.Errorf("%s the node bootstrap token at %s: %w", what, is.url(), err)
	}
	winner, _, err := ReadTokens(ctx, is.Store, is.Cluster)
	if err != nil {
		return Tokens{}, false, err
	}
	return winner, false, nil
}

// Ensure returns the cluster's current token, creating the first one (with
// DefaultPolicy) when none exists. Concurrent callers get the same token;
// created says this call wrote it.
func Ensure(ctx context.Context, st store.Store, cluster string) (Token, bool, error) {
	r, err := Issuer{Store: st, Cluster: cluster}.Ensure(ctx)
	return r.Tokens.Current.Token, r.Created, err
}
