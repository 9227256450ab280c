package observe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestFetchStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/status":
			w.Write([]byte(`{"ready":true,"name":"x"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var st struct {
		Ready bool
		Name  string
	}
	if err := FetchStatus(context.Background(), nil, addr, "demo daemon", &st); err != nil || !st.Ready || st.Name != "x" {
		t.Fatalf("FetchStatus = %+v, %v", st, err)
	}

	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not yet", http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	err := FetchStatus(context.Background(), nil, strings.TrimPrefix(bad.URL, "http://"), "demo daemon", &st)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "not yet") {
		t.Fatalf("a 503 gave %v", err)
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	err = FetchStatus(context.Background(), nil, closed, "demo daemon", &st)
	if err == nil || !strings.Contains(err.Error(), "is `demo daemon` running?") {
		t.Fatalf("nothing listening gave %v", err)
	}
}
