// Package seeds finds the addresses a gossip node joins through. A Provider
// is one source (a static list, the state store registry, EC2 by tag); each
// lives in its own file. Workers use the static or store providers and need
// no cloud credentials.
package seeds

import (
	"context"
	"net"
	"strconv"
)

// Provider returns host:port addresses of gossip members to join.
type Provider interface {
	Seeds(ctx context.Context) ([]string, error)
}

// Static is a fixed list of host:port seeds.
type Static []string

// Seeds returns the list.
func (s Static) Seeds(ctx context.Context) ([]string, error) { return append([]string(nil), s...), nil }

// withPort adds port to a bare host.
func withPort(host string, port int) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
