package bootstraptoken

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// DefaultTTL is how long a new token is valid. A day keeps a leaked token
// short-lived while a machine that boots late in a token's life still joins
// (rotation leaves DefaultRotateFraction of it, 8 hours, of overlap).
const DefaultTTL = 24 * time.Hour

// DefaultRotateFraction: the control plane writes a new token when less
// than this fraction of the current one's life is left. The old token stays
// valid for that remainder, so a machine that read it just before the
// rotation still joins.
const DefaultRotateFraction = 1.0 / 3

// MinTTL is the shortest TTL accepted: the control plane checks the token
// once a minute, and a shorter life would leave booting machines too little
// time between reading a token and presenting it.
const MinTTL = 10 * time.Minute

// Policy is how long tokens live and when they are replaced.
type Policy struct {
	// TTL is the life of a new token.
	TTL time.Duration
	// RotateFraction: rotate when less than this fraction of the current
	// token's life is left; in (0, 1).
	RotateFraction float64
}

// DefaultPolicy returns the defaults.
func DefaultPolicy() Policy { return Policy{TTL: DefaultTTL, RotateFraction: DefaultRotateFraction} }

// Validate reports every problem; field names are the policy's.
func (p Policy) Validate() error {
	var errs []error
	if p.TTL < MinTTL {
		errs = append(errs, fmt.Errorf("ttl: %s is shorter than the minimum %s", p.TTL, MinTTL))
	}
	if !(p.RotateFraction > 0 && p.RotateFraction < 1) {
		errs = append(errs, fmt.Errorf("rotateFraction: %g is not between 0 and 1", p.RotateFraction))
	}
	return errors.Join(errs...)
}

// overlap is how long an old token stays valid after a rotation when it
// carries no expiry of its own (a token written before tokens expired).
func (p Policy) overlap() time.Duration {
	return time.Duration(float64(p.TTL) * p.RotateFraction)
}

// Issued is a token and its life. A token read from the store's old format
// (a bare "<id>.<secret>") has neither Created nor Expires: it never
// expires, and the control plane replaces it on its next pass.
type Issued struct {
	Token   Token
	Created time.Time
	Expires time.Time
}

// Expired reports whether the token is past its expiry at now.
func (i Issued) Expired(now time.Time) bool {
	return !i.Expires.IsZero() && !now.Before(i.Expires)
}

// LogValue keeps the secret out of logs.
func (i Issued) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("id", i.Token.ID)}
	if !i.Expires.IsZero() {
		attrs = append(attrs, slog.Time("expires", i.Expires))
	}
	return slog.GroupValue(attrs...)
}

// Tokens is what the store holds: the current token, which machines use to
// join, and the earlier ones that have not expired yet, whose Secrets stay
// in the API so that machines that read them before a rotation still join.
type Tokens struct {
	Current Issued
	// Previous are earlier tokens, newest first.
	Previous []Issued
}

// Valid returns the tokens that have not expired at now, current first:
// the ones whose Secrets the control plane publishes.
func (ts Tokens) Valid(now time.Time) []Issued {
	var out []Issued
	for _, i := range append([]Issued{ts.Current}, ts.Previous...) {
		if !i.Expired(now) {
			out = append(out, i)
		}
	}
	return out
}

// Decision is the outcome of Decide.
type Decision struct {
	Rotate bool
	// Reason says why (or why not), for the log and status.
	Reason string
}

// Decide says whether the current token must be replaced at now: when it
// has no expiry (old format), has expired, or has less than
// p.RotateFraction of its life left. Its life is its own (Expires -
// Created), so a changed TTL applies from the next token on.
func Decide(now time.Time, cur Issued, p Policy) Decision {
	if cur.Expires.IsZero() {
		return Decision{Rotate: true, Reason: fmt.Sprintf("token %s has no expiry (written before tokens expired)", cur.Token.ID)}
	}
	if cur.Expired(now) {
		return Decision{Rotate: true, Reason: fmt.Sprintf("token %s expired at %s", cur.Token.ID, cur.Expires.UTC().Format(time.RFC3339))}
	}
	life := cur.Expires.Sub(cur.Created)
	if cur.Created.IsZero() || life <= 0 {
		life = p.TTL
	}
	left := cur.Expires.Sub(now)
	threshold := time.Duration(float64(life) * p.RotateFraction)
	if left < threshold {
		return Decision{Rotate: true, Reason: fmt.Sprintf("token %s has %s of its %s left, less than %s", cur.Token.ID, left.Round(time.Second), life, threshold.Round(time.Second))}
	}
	return Decision{Reason: fmt.Sprintf("token %s has %s of its %s left", cur.Token.ID, left.Round(time.Second), life)}
}

// New returns the Tokens of a fresh cluster: one token valid for p.TTL.
func New(now time.Time, t Token, p Policy) Tokens {
	return Tokens{Current: Issued{Token: t, Created: now, Expires: now.Add(p.TTL)}}
}

// Next returns old after a rotation at now to t: t is current for p.TTL,
// the old current becomes the newest previous token, and tokens expired at
// now are dropped. An old token without expiry gets one (now plus the
// overlap a rotation normally leaves), so that its Secret finally expires.
func Next(now time.Time, old Tokens, t Token, p Policy) Tokens {
	next := New(now, t, p)
	for _, i := range append([]Issued{old.Current}, old.Previous...) {
		if i.Token == t {
			continue
		}
		if i.Expires.IsZero() {
			i.Expires = now.Add(p.overlap())
		}
		if !i.Expired(now) {
			next.Previous = append(next.Previous, i)
		}
	}
	return next
}
