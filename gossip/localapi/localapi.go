// Package localapi is the gossip daemon's API for the other agents on its
// node: they publish replicated records under a lease and read every
// node's records, over HTTP on the daemon's status listener (loopback by
// default). This package holds the types, the paths and the client; the
// server is protokube gossip (package protokube/gossipd). etcd-manager
// publishes its peer address here, so its peers find it through gossip
// (etcd-manager/discovery.Gossip).
package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultAddr is where protokube gossip serves this API (its
// --status-listen default).
const DefaultAddr = "127.0.0.1:3993"

// RecordsPath is the API's root: PUT and DELETE RecordsPath+key publish and
// withdraw this node's record; GET RecordsPath?prefix=P lists every node's
// records under P.
const RecordsPath = "/v1/records/"

// PublishPrefix is the key space agents may publish in, apart from the
// daemon's own records (DNS names, pod ranges).
const PublishPrefix = "agents/"

// MaxLease bounds a publication's lease: an agent that stops refreshing
// its record loses it within this time.
const MaxLease = 10 * time.Minute

// Publication is the body of a PUT: the record's value and how long it
// lives unless published again.
type Publication struct {
	Value []byte `json:"value"`
	// LeaseSeconds is the lease, 1 to MaxLease in seconds.
	LeaseSeconds int `json:"leaseSeconds"`
}

// Entry is one node's record in a listing.
type Entry struct {
	// Owner is the gossip node name of the publisher.
	Owner string `json:"owner"`
	Key   string `json:"key"`
	Value []byte `json:"value"`
	// OwnerAlive says the owner is a live gossip member; records of a
	// node that left or died are listed until they are withdrawn.
	OwnerAlive bool `json:"ownerAlive"`
}

// ValidateKey checks a key an agent publishes: under PublishPrefix, with no
// empty segment.
func ValidateKey(key string) error {
	rest, ok := strings.CutPrefix(key, PublishPrefix)
	if !ok || rest == "" {
		return fmt.Errorf("record key %q: must start with %q", key, PublishPrefix)
	}
	for _, seg := range strings.Split(rest, "/") {
		if seg == "" {
			return fmt.Errorf("record key %q: empty path segment", key)
		}
	}
	return nil
}

// Client calls the API of the gossip daemon at Addr (host:port).
type Client struct {
	Addr string
	// HTTP is the client; nil means one with a 5 second timeout.
	HTTP *http.Client
}

func (c Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 5 * time.Second}
}

func (c Client) url(key string, q url.Values) string {
	u := url.URL{Scheme: "http", Host: c.Addr, Path: RecordsPath + key}
	if q != nil {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Publish writes this node's record for key with a lease.
func (c Client) Publish(ctx context.Context, key string, value []byte, lease time.Duration) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	body, err := json.Marshal(Publication{Value: value, LeaseSeconds: int((lease + time.Second - 1) / time.Second)})
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPut, c.url(key, nil), bytes.NewReader(body), nil)
}

// Withdraw removes this node's record for key.
func (c Client) Withdraw(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, c.url(key, nil), nil, nil)
}

// List returns every node's live (not withdrawn) records under prefix.
func (c Client) List(ctx context.Context, prefix string) ([]Entry, error) {
	var out []Entry
	err := c.do(ctx, http.MethodGet, c.url("", url.Values{"prefix": {prefix}}), nil, &out)
	return out, err
}

func (c Client) do(ctx context.Context, method, u string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("gossip daemon at %s (protokube gossip --status-listen): %w", c.Addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding the answer: %w", method, u, err)
		}
	}
	return nil
}

// ErrNotLoopback is returned by the server for writes that do not come
// from this node.
var ErrNotLoopback = errors.New("records are published only from this node (a loopback address)")
