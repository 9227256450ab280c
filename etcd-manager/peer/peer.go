// Package peer is the protocol between etcd-manager instances: HTTP with JSON
// bodies over mutual TLS on the manager port. Both ends present a
// certificate issued by the etcd-manager CA of the etcd cluster; a peer
// without one is refused during the handshake. The leader reads every
// peer's Info and tells peers to join the cluster or to leave it.
package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Info is what an instance tells its peers about itself.
type Info struct {
	ID          string   `json:"id"`
	ManagerAddr string   `json:"managerAddr"`
	PeerURLs    []string `json:"peerURLs"`
	ClientURLs  []string `json:"clientURLs"`
	// ClusterToken is the cluster it belongs to; empty when idle.
	ClusterToken string `json:"clusterToken,omitempty"`
	// EtcdRunning: an etcd process is running; EtcdHealthy: it answers.
	EtcdRunning bool   `json:"etcdRunning"`
	EtcdHealthy bool   `json:"etcdHealthy"`
	EtcdVersion string `json:"etcdVersion,omitempty"`
	// MemberID is etcd's member ID in hex, when etcd answers.
	MemberID string `json:"memberID,omitempty"`
	// EtcdLearner: the local member is a learner (not yet promoted).
	EtcdLearner bool `json:"etcdLearner,omitempty"`
	// CertNotAfter is when the first of its etcd certificates expires.
	CertNotAfter time.Time `json:"certNotAfter"`
	// DataDirEmpty: no etcd member data on disk.
	DataDirEmpty bool `json:"dataDirEmpty"`
	// RaftIndex, RaftTerm and Revision are the local member's position,
	// reported when its etcd answers but is not healthy (no raft leader):
	// quorum-loss recovery picks the survivor that got furthest.
	RaftIndex uint64 `json:"raftIndex,omitempty"`
	RaftTerm  uint64 `json:"raftTerm,omitempty"`
	Revision  int64  `json:"revision,omitempty"`
	// Leader is the leader this instance believes in, and its term.
	Leader     string `json:"leader,omitempty"`
	LeaderTerm int64  `json:"leaderTerm,omitempty"`
	// Restore is the restore this instance last took part in, if any.
	Restore *RestoreInfo `json:"restore,omitempty"`
}

// RestoreInfo is where an instance is in a restore (package
// etcd-manager/restore: Step is one of its Step values).
type RestoreInfo struct {
	CommandID string `json:"commandID"`
	Step      string `json:"step"`
	Error     string `json:"error,omitempty"`
}

// RestoreRequest tells an instance what to do in the restore CommandID
// (package etcd-manager/restore). Phase "restore": stop etcd, move its
// data aside, fetch and check the full backup Backup from the backup
// store, restore it with etcdutl under ClusterToken and InitialCluster,
// adding BumpRevision to its revision and marking it compacted, and start
// it quarantined; "open": restart it serving clients as usual;
// "rollback": put the old data back and restart the old member;
// "finish": prune old moved-aside data. The instance works in the
// background and reports its progress in Info.Restore; a repeated
// request for work done or under way is a no-op.
type RestoreRequest struct {
	LeaderID       string `json:"leaderID"`
	LeaderTerm     int64  `json:"leaderTerm"`
	CommandID      string `json:"commandID"`
	Phase          string `json:"phase"`
	Backup         string `json:"backup,omitempty"`
	ClusterToken   string `json:"clusterToken,omitempty"`
	EtcdVersion    string `json:"etcdVersion,omitempty"`
	InitialCluster string `json:"initialCluster,omitempty"`
	BumpRevision   int64  `json:"bumpRevision,omitempty"`
}

// Idle reports whether the instance can be added to a cluster: no etcd, no data.
func (i Info) Idle() bool { return !i.EtcdRunning && i.DataDirEmpty && i.ClusterToken == "" }

// JoinRequest tells an instance to start etcd as a member.
type JoinRequest struct {
	LeaderID   string `json:"leaderID"`
	LeaderTerm int64  `json:"leaderTerm"`
	// ClusterToken is the cluster's --initial-cluster-token.
	ClusterToken string `json:"clusterToken"`
	EtcdVersion  string `json:"etcdVersion"`
	// InitialCluster is "name=peerURL,..." including the instance.
	InitialCluster string `json:"initialCluster"`
	// State is "new" (creating the cluster) or "existing" (joining).
	State string `json:"state"`
}

// LeaveRequest tells an instance it is no longer a member: it stops etcd,
// moves its etcd data aside and becomes idle.
type LeaveRequest struct {
	LeaderID     string `json:"leaderID"`
	LeaderTerm   int64  `json:"leaderTerm"`
	ClusterToken string `json:"clusterToken"`
}

// RotateRequest tells an instance to reissue its etcd certificates and
// restart etcd.
type RotateRequest struct {
	LeaderID   string `json:"leaderID"`
	LeaderTerm int64  `json:"leaderTerm"`
}

// Node is the local instance, served to peers.
type Node interface {
	Info(ctx context.Context) (Info, error)
	Join(ctx context.Context, req JoinRequest) error
	Leave(ctx context.Context, req LeaveRequest) error
	Rotate(ctx context.Context, req RotateRequest) error
}

// Restorer is a Node that takes part in restores (POST /v1/restore).
type Restorer interface {
	Restore(ctx context.Context, req RestoreRequest) error
}

// ServerTLS returns a server TLS config that requires a client certificate
// from the CAs in pool. getCert returns the current serving certificate
// (so rotation needs no restart).
func ServerTLS(pool *x509.CertPool, getCert func() (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return getCert()
		},
	}
}

// ClientTLS returns a client TLS config that trusts only pool and presents
// the current certificate.
func ClientTLS(pool *x509.CertPool, getCert func() (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return getCert()
		},
	}
}

// Server serves a Node to peers.
type Server struct {
	srv    *http.Server
	ln     net.Listener
	done   chan struct{}
	once   sync.Once
	logger *slog.Logger
}

// Serve listens on addr with tlsCfg (from ServerTLS) and serves node.
func Serve(addr string, tlsCfg *tls.Config, node Node, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for peers on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, r *http.Request) {
		info, err := node.Info(r.Context())
		reply(w, info, err)
	})
	mux.HandleFunc("POST /v1/join", func(w http.ResponseWriter, r *http.Request) {
		var req JoinRequest
		if err := decode(r, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reply(w, struct{}{}, node.Join(r.Context(), req))
	})
	mux.HandleFunc("POST /v1/leave", func(w http.ResponseWriter, r *http.Request) {
		var req LeaveRequest
		if err := decode(r, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reply(w, struct{}{}, node.Leave(r.Context(), req))
	})
	mux.HandleFunc("POST /v1/rotate", func(w http.ResponseWriter, r *http.Request) {
		var req RotateRequest
		if err := decode(r, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reply(w, struct{}{}, node.Rotate(r.Context(), req))
	})
	if rn, ok := node.(Restorer); ok {
		mux.HandleFunc("POST /v1/restore", func(w http.ResponseWriter, r *http.Request) {
			var req RestoreRequest
			if err := decode(r, &req); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			reply(w, struct{}{}, rn.Restore(r.Context(), req))
		})
	}
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			TLSConfig:         tlsCfg,
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		},
		ln:     ln,
		done:   make(chan struct{}),
		logger: logger,
	}
	go func() {
		defer close(s.done)
		if err := s.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("peer server stopped", "addr", addr, "err", err)
		}
	}()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops serving and waits. Safe to call twice.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = s.srv.Shutdown(ctx)
		if err != nil {
			_ = s.srv.Close()
		}
	})
	<-s.done
	return err
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding request body: %w", err)
	}
	return nil
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Client calls peers.
type Client struct {
	http *http.Client
}

// NewClient returns a client using tlsCfg (from ClientTLS). sourceIP, when
// not empty, is the local address connections are made from, so that
// blocking an instance's address cuts its outgoing traffic too.
func NewClient(tlsCfg *tls.Config, sourceIP string, timeout time.Duration) *Client {
	d := &net.Dialer{Timeout: timeout}
	if sourceIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(sourceIP)}
	}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: timeout,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{http: &http.Client{Transport: tr, Timeout: timeout}}
}

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Info asks the peer at addr (host:port) for its Info.
func (c *Client) Info(ctx context.Context, addr string) (Info, error) {
	var info Info
	err := c.do(ctx, http.MethodGet, addr, "/v1/info", nil, &info)
	return info, err
}

// Join tells the peer at addr to join the cluster.
func (c *Client) Join(ctx context.Context, addr string, req JoinRequest) error {
	return c.do(ctx, http.MethodPost, addr, "/v1/join", req, nil)
}

// Leave tells the peer at addr to leave the cluster.
func (c *Client) Leave(ctx context.Context, addr string, req LeaveRequest) error {
	return c.do(ctx, http.MethodPost, addr, "/v1/leave", req, nil)
}

// Rotate tells the peer at addr to reissue its etcd certificates.
func (c *Client) Rotate(ctx context.Context, addr string, req RotateRequest) error {
	return c.do(ctx, http.MethodPost, addr, "/v1/rotate", req, nil)
}

// Restore sends a restore request to the peer at addr.
func (c *Client) Restore(ctx context.Context, addr string, req RestoreRequest) error {
	return c.do(ctx, http.MethodPost, addr, "/v1/restore", req, nil)
}

func (c *Client) do(ctx context.Context, method, addr, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := "https://" + addr + path
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("peer %s: %w", u, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("peer %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("peer %s: reading reply: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("peer %s: %s: %s", u, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("peer %s: decoding reply: %w", u, err)
		}
	}
	return nil
}
