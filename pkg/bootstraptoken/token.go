// Package bootstraptoken is the cluster's kubelet TLS-bootstrap token: its
// format (Kubernetes bootstrap tokens, "<id>.<secret>"), its lifetime and
// rotation, where it lives in the state store, and the conditional writes
// that create and rotate it. Workers read the current token to obtain their
// kubelet certificates from the API server, so they never need a CA key;
// the control plane publishes every token that has not expired to the API
// as a bootstrap-token Secret with that expiry.
package bootstraptoken

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
)

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
