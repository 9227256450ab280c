package gossipd

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kopsnode/agents/gossip/localapi"
	"github.com/kopsnode/agents/gossip/records"
)

// publisher serves the local records API (package gossip/localapi): the
// node's other agents publish records under localapi.PublishPrefix with a
// lease, and read every node's records. A record whose lease runs out is
// withdrawn (a tombstone), so an agent that stopped does not stay
// discoverable while the node lives on.
type publisher struct {
	table *records.Table
	now   func() time.Time

	mu     sync.Mutex // guards leases
	leases map[string]time.Time
}

func newPublisher(t *records.Table, now func() time.Time) *publisher {
	if now == nil {
		now = time.Now
	}
	return &publisher{table: t, now: now, leases: map[string]time.Time{}}
}

// handlers are the routes for observe.Config.Handlers.
func (p *publisher) handlers() map[string]http.Handler {
	return map[string]http.Handler{
		"GET " + localapi.RecordsPath:                 http.HandlerFunc(p.list),
		"PUT " + localapi.RecordsPath + "{key...}":    http.HandlerFunc(p.put),
		"DELETE " + localapi.RecordsPath + "{key...}": http.HandlerFunc(p.delete),
	}
}

func (p *publisher) list(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	out := []localapi.Entry{}
	for _, v := range p.table.All() {
		if v.Deleted || !strings.HasPrefix(v.Key, prefix) {
			continue
		}
		out = append(out, localapi.Entry{Owner: v.Owner, Key: v.Key, Value: v.Value, OwnerAlive: v.OwnerAlive})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// fromThisNode: writes come only over loopback, whatever --status-listen
// says, so no other machine can publish in this node's name.
func fromThisNode(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func (p *publisher) put(w http.ResponseWriter, r *http.Request) {
	if !fromThisNode(r) {
		http.Error(w, localapi.ErrNotLoopback.Error(), http.StatusForbidden)
		return
	}
	key := r.PathValue("key")
	if err := localapi.ValidateKey(key); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var pub localapi.Publication
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(body, &pub)
	}
	if err != nil {
		http.Error(w, "decoding the publication: "+err.Error(), http.StatusBadRequest)
		return
	}
	lease := time.Duration(pub.LeaseSeconds) * time.Second
	if lease <= 0 || lease > localapi.MaxLease {
		http.Error(w, fmt.Sprintf("leaseSeconds: %d is not 1 to %d", pub.LeaseSeconds, int(localapi.MaxLease/time.Second)), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Put under the lock, so an expiry cannot withdraw a record published
	// again a moment ago.
	if err := p.table.Put(key, pub.Value); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.leases[key] = p.now().Add(lease)
	w.WriteHeader(http.StatusNoContent)
}

func (p *publisher) delete(w http.ResponseWriter, r *http.Request) {
	if !fromThisNode(r) {
		http.Error(w, localapi.ErrNotLoopback.Error(), http.StatusForbidden)
		return
	}
	key := r.PathValue("key")
	if err := localapi.ValidateKey(key); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.leases, key)
	if err := p.table.Delete(key); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// expire withdraws the records whose lease ended and returns their keys.
func (p *publisher) expire() []string {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var gone []string
	for key, until := range p.leases {
		if now.After(until) {
			gone = append(gone, key)
			delete(p.leases, key)
			_ = p.table.Delete(key) // a key that passed ValidateKey
		}
	}
	sort.Strings(gone)
	return gone
}
