// Package gossipkeys creates, rotates and shows a cluster's gossip keyring
// in the state store (`protokube gossip-keys`). Every write is conditional:
// create-if-absent for the first keyring, compare-and-swap on the version
// read for each rotation step, so operators racing each other never lose an
// update. Nothing here prints or returns key material: keys are named by a
// short fingerprint.
package gossipkeys

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/store"
)

// KeySize is the size of the keys this package generates (AES-256).
const KeySize = 32

// Step is one step of a key rotation, in the order they must run.
type Step string

const (
	// StepAdd adds a new key that every node accepts; the primary is unchanged.
	StepAdd Step = "add"
	// StepUse makes the newest key the primary (the key nodes encrypt with).
	StepUse Step = "use"
	// StepRemove removes every key but the primary.
	StepRemove Step = "remove"
)

// ParseStep checks a step name.
func ParseStep(s string) (Step, error) {
	switch st := Step(s); st {
	case StepAdd, StepUse, StepRemove:
		return st, nil
	}
	return "", fmt.Errorf("--step: %q is not one of add, use, remove", s)
}

// ErrRefused is wrapped by errors for a rotation step that would break the
// cluster or skip a step; the message says which step must run first.
var ErrRefused = errors.New("refused")

// ErrMissing is wrapped when the keyring object does not exist.
var ErrMissing = errors.New("gossip keyring does not exist")

// ErrConflict is wrapped when the keyring kept changing under a rotation
// step and the retries ran out; this run wrote nothing.
var ErrConflict = errors.New("gossip keyring changed concurrently")

// DefaultAttempts is how many read-modify-write rounds a rotation step makes
// before giving up on concurrent writers.
const DefaultAttempts = 5

// Keyring is a cluster's gossip keyring object in a state store.
type Keyring struct {
	Store store.Store
	// Key is the object key, membership.KeysObject(cluster).
	Key string
	// Attempts bounds the compare-and-swap rounds of Rotate; 0 means
	// DefaultAttempts.
	Attempts int
}

// ForCluster returns the keyring object of a cluster.
func ForCluster(st store.Store, cluster string) Keyring {
	return Keyring{Store: st, Key: membership.KeysObject(cluster)}
}

// URL is the object's full URL, for messages.
func (k Keyring) URL() string { return store.JoinURL(k.Store.URL(), k.Key) }

// NewKey returns a random key of KeySize bytes from r (crypto/rand.Reader
// in production), base64-encoded as the keyring document holds it.
func NewKey(r io.Reader) (string, error) {
	b := make([]byte, KeySize)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("generating a gossip key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Fingerprint names a key without revealing it: the first 8 hex digits of
// the SHA-256 of the key's bytes. A string that is not base64 is hashed as is.
func Fingerprint(key string) string {
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		b = []byte(key)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:4])
}

// KeyInfo describes one key of a keyring by its fingerprint.
type KeyInfo struct {
	Fingerprint string `json:"fingerprint"`
	Primary     bool   `json:"primary"`
	Newest      bool   `json:"newest"`
}

// Summary describes a keyring without key material.
type Summary struct {
	URL     string `json:"url"`
	Version string `json:"version"`
	// NumKeys counts the distinct keys, the primary included.
	NumKeys int `json:"numKeys"`
	// Primary is the fingerprint of the key nodes encrypt with.
	Primary string `json:"primary"`
	// Keys are oldest first, as listed in the document.
	Keys []KeyInfo `json:"keys"`
	// Next is the rotation step that comes next: "use" after an add,
	// "remove" after a use, "add" to start a rotation when there is one key,
	// or "" when the order of the keys is unknown (a hand-written document
	// whose keys list omits the primary).
	Next Step `json:"next,omitempty"`
}

// ring is a keyring document in rotation order.
type ring struct {
	keys    []string // distinct keys, oldest first; the primary among them
	bytes   [][]byte // decoded keys, same order
	primary int      // index of the primary in keys
	// ordered is false when the document lists other keys but not the
	// primary: then which key is newest is unknown.
	ordered bool
}

// order decodes ks (checked already by ParseKeySet) into rotation order:
// the keys list as written, with the primary first when it is not listed.
func order(ks membership.KeySet, source string) (ring, error) {
	primary, _, err := ks.Decode(source)
	if err != nil {
		return ring{}, err
	}
	var r ring
	r.primary = -1
	add := func(s string) {
		b, _ := base64.StdEncoding.DecodeString(s)
		for _, have := range r.bytes {
			if bytes.Equal(have, b) {
				return
			}
		}
		if bytes.Equal(b, primary) {
			r.primary = len(r.keys)
		}
		r.keys = append(r.keys, s)
		r.bytes = append(r.bytes, b)
	}
	for _, s := range ks.Keys {
		add(s)
	}
	r.ordered = r.primary >= 0 || len(r.keys) == 0
	if r.primary < 0 {
		r.keys = append([]string{ks.Primary}, r.keys...)
		r.bytes = append([][]byte{primary}, r.bytes...)
		r.primary = 0
	}
	return r, nil
}

func (r ring) newest() int { return len(r.keys) - 1 }

func (r ring) next() Step {
	switch {
	case !r.ordered:
		return ""
	case len(r.keys) == 1:
		return StepAdd
	case r.primary != r.newest():
		return StepUse
	default:
		return StepRemove
	}
}

func summarize(r ring, url string, version store.Version) Summary {
	s := Summary{URL: url, Version: string(version), NumKeys: len(r.keys), Next: r.next()}
	for i, k := range r.keys {
		ki := KeyInfo{Fingerprint: Fingerprint(k), Primary: i == r.primary, Newest: r.ordered && i == r.newest()}
		if ki.Primary {
			s.Primary = ki.Fingerprint
		}
		s.Keys = append(s.Keys, ki)
	}
	return s
}

// Describe summarizes a keyring document.
func Describe(ks membership.KeySet, url string, version store.Version) (Summary, error) {
	r, err := order(ks, url)
	if err != nil {
		return Summary{}, err
	}
	return summarize(r, url, version), nil
}

// Apply computes the document after one rotation step. newKey is the key
// that StepAdd adds (ignored by the other steps). changed is false when
// the step had already been done (StepUse with the newest key already
// primary). A step that would break the cluster or skip a step returns an
// error wrapping ErrRefused that names the step to run first.
//
// The documents it writes list every key, oldest first, the primary
// included; after StepRemove only the primary remains.
func Apply(ks membership.KeySet, step Step, newKey string) (out membership.KeySet, changed bool, err error) {
	r, err := order(ks, "keyring")
	if err != nil {
		return membership.KeySet{}, false, err
	}
	if step != StepAdd && !r.ordered {
		return membership.KeySet{}, false, fmt.Errorf("%w: the keys list does not include the primary %s, so which key is newest is unknown; list every key oldest first (the primary among them), or run --step add, which writes them in order", ErrRefused, Fingerprint(ks.Primary))
	}
	switch step {
	case StepAdd:
		if _, _, err := (membership.KeySet{Primary: newKey}).Decode("the new key"); err != nil {
			return membership.KeySet{}, false, err
		}
		b, _ := base64.StdEncoding.DecodeString(newKey)
		for _, have := range r.bytes {
			if bytes.Equal(have, b) {
				return membership.KeySet{}, false, fmt.Errorf("the new key %s is already in the keyring", Fingerprint(newKey))
			}
		}
		keys := append(append([]string(nil), r.keys...), newKey)
		return membership.KeySet{Primary: r.keys[r.primary], Keys: keys}, true, nil
	case StepUse:
		if len(r.keys) == 1 {
			return membership.KeySet{}, false, fmt.Errorf("%w: the keyring has only the primary key %s, there is no new key to use; run --step add first", ErrRefused, Fingerprint(r.keys[0]))
		}
		if r.primary == r.newest() {
			return ks, false, nil
		}
		return membership.KeySet{Primary: r.keys[r.newest()], Keys: append([]string(nil), r.keys...)}, true, nil
	case StepRemove:
		if len(r.keys) == 1 {
			return membership.KeySet{}, false, fmt.Errorf("%w: the keyring has only the primary key %s, there is nothing to remove; a rotation starts with --step add", ErrRefused, Fingerprint(r.keys[0]))
		}
		if r.primary != r.newest() {
			return membership.KeySet{}, false, fmt.Errorf("%w: the newest key %s is not the primary yet (primary %s); run --step use first, or removing would drop the new key", ErrRefused, Fingerprint(r.keys[r.newest()]), Fingerprint(r.keys[r.primary]))
		}
		return membership.KeySet{Primary: r.keys[r.primary]}, true, nil
	}
	return membership.KeySet{}, false, fmt.Errorf("unknown rotation step %q", step)
}

// Result is what Create or Rotate did.
type Result struct {
	// Changed is true when this run wrote the keyring.
	Changed bool `json:"changed"`
	// Step is the rotation step, empty for Create.
	Step Step `json:"step,omitempty"`
	// Added is the fingerprint of the key this run added (Create, StepAdd).
	Added string `json:"added,omitempty"`
	// Removed are the fingerprints of the keys StepRemove dropped.
	Removed []string `json:"removed,omitempty"`
	// Attempts counts the read-modify-write rounds (more than one after a
	// concurrent write).
	Attempts int `json:"attempts,omitempty"`
	// Keyring is the keyring after the run.
	Keyring Summary `json:"keyring"`
}

// Load reads and checks the keyring. A missing object wraps ErrMissing.
func (k Keyring) Load(ctx context.Context) (membership.KeySet, store.Info, error) {
	b, info, err := store.ReadAll(ctx, k.Store, k.Key)
	if errors.Is(err, store.ErrNotFound) {
		return membership.KeySet{}, store.Info{}, fmt.Errorf("%w at %s; run `protokube gossip-keys create` first", ErrMissing, k.URL())
	}
	if err != nil {
		return membership.KeySet{}, store.Info{}, fmt.Errorf("reading gossip keyring %s: %w", k.URL(), err)
	}
	ks, err := membership.ParseKeySet(b, k.URL())
	if err != nil {
		return membership.KeySet{}, store.Info{}, err
	}
	return ks, info, nil
}

// Show summarizes the keyring.
func (k Keyring) Show(ctx context.Context) (Summary, error) {
	ks, info, err := k.Load(ctx)
	if err != nil {
		return Summary{}, err
	}
	return Describe(ks, k.URL(), info.Version)
}

// Create writes a keyring holding one new random key from rnd, unless one
// exists: then it leaves it unchanged and returns Changed false with its
// summary. Concurrent creators yield exactly one keyring.
func (k Keyring) Create(ctx context.Context, rnd io.Reader) (Result, error) {
	key, err := NewKey(rnd)
	if err != nil {
		return Result{}, err
	}
	ks := membership.KeySet{Primary: key}
	info, err := membership.PutKeys(ctx, k.Store, k.Key, ks, store.Condition{IfAbsent: true})
	if err == nil {
		sum, err := Describe(ks, k.URL(), info.Version)
		return Result{Changed: true, Added: Fingerprint(key), Attempts: 1, Keyring: sum}, err
	}
	if !errors.Is(err, store.ErrPrecondition) {
		return Result{}, fmt.Errorf("creating gossip keyring %s: %w", k.URL(), err)
	}
	sum, err := k.Show(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("gossip keyring %s exists but cannot be used (fix or delete it): %w", k.URL(), err)
	}
	return Result{Attempts: 1, Keyring: sum}, nil
}

// Rotate runs one rotation step as a compare-and-swap on the version read.
// When another writer changes the keyring in between, it re-reads and
// recomputes the step, up to Attempts rounds; then it fails with an error
// wrapping ErrConflict and writes nothing. rnd supplies StepAdd's new key.
func (k Keyring) Rotate(ctx context.Context, step Step, rnd io.Reader) (Result, error) {
	if _, err := ParseStep(string(step)); err != nil {
		return Result{}, err
	}
	var newKey string
	if step == StepAdd {
		var err error
		if newKey, err = NewKey(rnd); err != nil {
			return Result{}, err
		}
	}
	attempts := k.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	for attempt := 1; ; attempt++ {
		ks, info, err := k.Load(ctx)
		if err != nil {
			return Result{}, err
		}
		out, changed, err := Apply(ks, step, newKey)
		if err != nil {
			return Result{}, fmt.Errorf("gossip keyring %s: --step %s: %w", k.URL(), step, err)
		}
		res := Result{Step: step, Attempts: attempt}
		if !changed {
			res.Keyring, err = Describe(ks, k.URL(), info.Version)
			return res, err
		}
		written, err := membership.PutKeys(ctx, k.Store, k.Key, out, store.Condition{IfVersion: info.Version})
		if errors.Is(err, store.ErrPrecondition) {
			if attempt >= attempts {
				return Result{}, fmt.Errorf("%w: gossip keyring %s changed under each of %d attempts of --step %s (is another operator rotating it?); this run wrote nothing: check `protokube gossip-keys show` and run the step again", ErrConflict, k.URL(), attempts, step)
			}
			if err := backoff(ctx, attempt); err != nil {
				return Result{}, fmt.Errorf("--step %s on gossip keyring %s: %w", step, k.URL(), err)
			}
			continue
		}
		if err != nil {
			return Result{}, fmt.Errorf("--step %s on gossip keyring %s: %w", step, k.URL(), err)
		}
		res.Changed = true
		if step == StepAdd {
			res.Added = Fingerprint(newKey)
		}
		if step == StepRemove {
			r, _ := order(ks, k.URL())
			for i, key := range r.keys {
				if i != r.primary {
					res.Removed = append(res.Removed, Fingerprint(key))
				}
			}
		}
		res.Keyring, err = Describe(out, k.URL(), written.Version)
		return res, err
	}
}

// backoff waits a short random time, growing with the attempt, so that
// racing writers spread out.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(attempt)*20*time.Millisecond + rand.N(20*time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
