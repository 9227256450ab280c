package observe

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServer(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "demo_things_total", Help: "things"})
	reg.MustRegister(c)
	c.Add(3)
	var unhealthy atomic.Bool
	s, err := Start(Config{
		Addr:     "127.0.0.1:0",
		Registry: reg,
		Health: func(ctx context.Context) error {
			if unhealthy.Load() {
				return errors.New("etcd is not running")
			}
			return nil
		},
		Status: func(ctx context.Context) (any, error) { return map[string]int{"members": 3}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	base := "http://" + s.Addr()

	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	unhealthy.Store(true)
	if code, body := get(t, base+"/healthz"); code != 503 || !strings.Contains(body, "etcd is not running") {
		t.Errorf("/healthz when unhealthy = %d %q, want 503 with the reason", code, body)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "demo_things_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics = %d, missing the daemon's or the Go metrics:\n%s", code, body)
	}
	if code, body := get(t, base+"/status"); code != 200 || !strings.Contains(body, `"members": 3`) {
		t.Errorf("/status = %d %q", code, body)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Errorf("server still answers after Close")
	}
}

func TestStartRefusesBadAddress(t *testing.T) {
	if _, err := Start(Config{}); err == nil {
		t.Fatal("Start with no address succeeded")
	}
	_, err := Start(Config{Addr: "256.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "256.0.0.1:1") {
		t.Fatalf("Start(bad addr) = %v, want an error naming the address", err)
	}
}
