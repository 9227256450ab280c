// Package bootstraptoken is the cluster's kubelet TLS-bootstrap token: its
// format (Kubernetes bootstrap tokens, "<id>.<secret>"), where it lives in
// the state store, and its create-if-absent creation. Workers read it to
// obtain their kubelet certificates from the API server, so they never need
// a CA key; the control plane publishes it to the API as a bootstrap-token
// Secret.
package bootstraptoken

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"regexp"
	"strings"

	"github.com/kopsnode/agents/pkg/store"
)

// StoreKey is the token's key under <cluster>/ in the state store.
const StoreKey = "secrets/node-bootstrap-token"

// ExtraGroup is the group the token's Secret adds to the bootstrapping
// kubelet, which the RBAC bindings for node bootstrap name.
const ExtraGroup = "system:bootstrappers:kopsnode:nodes"

// Token is a bootstrap token. Its String form is the bearer token.
type Token struct {
	ID     string
	Secret string
}

// String returns "id.secret", the bearer token a kubelet presents. Treat it
// as a secret: never log it.
func (t Token) String() string { return t.ID + "." + t.Secret }

// LogValue keeps the secret half out of logs.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.ID + ".REDACTED") }

// SecretName is the name of the token's Secret in kube-system.
func SecretName(t Token) string { return "bootstrap-token-" + t.ID }

var tokenRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

// Parse parses "id.secret" (Kubernetes' bootstrap token format).
func Parse(s string) (Token, error) {
	m := tokenRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Token{}, errors.New("bootstrap token is not of the form [a-z0-9]{6}.[a-z0-9]{16}")
	}
	return Token{ID: m[1], Secret: m[2]}, nil
}

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// Generate makes a random token.
func Generate() (Token, error) { return generate(rand.Reader) }

func generate(r io.Reader) (Token, error) {
	b := make([]byte, 22)
	out := make([]byte, 0, 22)
	for len(out) < 22 {
		if _, err := io.ReadFull(r, b); err != nil {
			return Token{}, fmt.Errorf("generating bootstrap token: %w", err)
		}
		for _, c := range b {
			// Reject bytes above the largest multiple of len(alphabet) so
			// every character is equally likely.
			if int(c) < 256-256%len(alphabet) && len(out) < 22 {
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return Token{ID: string(out[:6]), Secret: string(out[6:])}, nil
}

// Key returns the token's full key in the store for a cluster.
func Key(cluster string) string { return path.Join(cluster, StoreKey) }

// Read reads the cluster's token. A missing token wraps store.ErrNotFound
// and names the URL.
func Read(ctx context.Context, st store.Store, cluster string) (Token, error) {
	b, _, err := store.ReadAll(ctx, st, Key(cluster))
	if err != nil {
		return Token{}, fmt.Errorf("reading the node bootstrap token: %w", err)
	}
	t, err := Parse(string(b))
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w", store.JoinURL(st.URL(), Key(cluster)), err)
	}
	return t, nil
}

// Ensure returns the cluster's token, creating it when none exists.
// Concurrent callers get the same token: creation is create-if-absent, and
// a loser reads the winner's. created says this call wrote it.
func Ensure(ctx context.Context, st store.Store, cluster string) (Token, bool, error) {
	t, err := Read(ctx, st, cluster)
	if err == nil {
		return t, false, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return Token{}, false, err
	}
	t, err = Generate()
	if err != nil {
		return Token{}, false, err
	}
	_, err = st.Put(ctx, Key(cluster), bytes.NewReader([]byte(t.String()+"\n")), store.Condition{IfAbsent: true})
	if err == nil {
		return t, true, nil
	}
	if !errors.Is(err, store.ErrPrecondition) {
		return Token{}, false, fmt.Errorf("creating the node bootstrap token at %s: %w", store.JoinURL(st.URL(), Key(cluster)), err)
	}
	t, err = Read(ctx, st, cluster)
	return t, false, err
}
