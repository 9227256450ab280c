package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(handler("pod-1"))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"get", srv.URL + "/"}, &out, &errb); code != 0 || out.String() != "pod-1\n" {
		t.Fatalf("get /: exit %d, %q, stderr %q; want the hostname", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"get", "--timeout", "2s", srv.URL + "/healthz"}, &out, &errb); code != 0 || out.String() != "ok\n" {
		t.Fatalf("get /healthz: exit %d, %q", code, out.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"get", srv.URL + "/nope"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "404") {
		t.Fatalf("get /nope: exit %d, stderr %q; want 1 and the status", code, errb.String())
	}
}

func TestGetTimeout(t *testing.T) {
	// A listener that never answers: get must give up after its timeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"get", "--timeout", "300ms", "http://" + l.Addr().String() + "/"}, &out, &errb)
	if code != 1 || time.Since(start) > 5*time.Second {
		t.Fatalf("exit %d after %s; want 1 soon after the timeout", code, time.Since(start))
	}
}

func TestServeAndStop(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() { done <- run(ctx, []string{"serve", "--listen", addr}, &bytes.Buffer{}, &errb) }()
	host, _ := os.Hostname()
	var body string
	for i := 0; i < 100; i++ {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			resp.Body.Close()
			body = b.String()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if body != host+"\n" {
		t.Fatalf("GET / answered %q, want the hostname %q", body, host)
	}
	cancel() // what SIGTERM does
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d after cancel: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on cancel")
	}
}

func TestLookup(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"lookup", "localhost"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "127.0.0.1") {
		t.Fatalf("lookup localhost: exit %d, %q, stderr %q", code, out.String(), errb.String())
	}
	if code := run(context.Background(), []string{"lookup", "--timeout", "2s", "no-such-name.invalid"}, &out, &errb); code != 1 {
		t.Fatalf("lookup of an invalid name: exit %d, want 1", code)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"get"}, {"lookup", "a", "b"}, {"serve", "--nope"}} {
		if code := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if code := run(ctx, []string{"sleep"}, &bytes.Buffer{}, &bytes.Buffer{}); code != 0 {
		t.Errorf("sleep after cancel: exit %d, want 0", code)
	}
}
