// Package observe serves a daemon's operational endpoints: /healthz (liveness
// and readiness from a health function), /metrics (Prometheus) and
// /status (the daemon's status as JSON, the same document its `status`
// command prints).
package observe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures the endpoint server.
type Config struct {
	// Addr is the listen address, for example "127.0.0.1:3990".
	Addr string
	// Registry holds the daemon's metrics; process and Go collectors are added.
	Registry *prometheus.Registry
	// Health returns nil when the daemon is healthy, or why it is not.
	Health func(ctx context.Context) error
	// Status returns the daemon's status document; optional.
	Status func(ctx context.Context) (any, error)
	// Handlers are further routes (http.ServeMux patterns) a daemon serves
	// beside these, such as the gossip daemon's local records API.
	Handlers map[string]http.Handler
	Logger   *slog.Logger
}

// Server is a running endpoint server. Close stops it.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	once sync.Once
}

// NewRegistry returns a registry with the standard Go and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Start listens on cfg.Addr and serves until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		return nil, errors.New("observe: listen address is empty")
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening for health and metrics on %s: %w", cfg.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if cfg.Health != nil {
			if err := cfg.Health(ctx); err != nil {
				http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	if cfg.Status != nil {
		mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
			v, err := cfg.Status(r.Context())
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(v)
		})
	}
	for pattern, h := range cfg.Handlers {
		mux.Handle(pattern, h)
	}
	s := &Server{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("health and metrics server stopped", "addr", cfg.Addr, "err", err)
		}
	}()
	return s, nil
}

// Addr returns the address the server listens on (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and waits for its goroutine. Safe to call twice.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = s.srv.Shutdown(ctx)
	})
	<-s.done
	return err
}
