// Command testapp is the test workload, packed as the image
// localhost/kopsnode/testapp:v1 by tools/build-test-tools.sh. One static
// binary with subcommands, so a test runs the same image as a server or as
// a client (also through `kubectl exec POD -- /testapp ...`):
//
//	testapp serve [--listen :8080]     GET / answers the hostname, GET /healthz "ok"
//	testapp get [--timeout 5s] URL     prints the body; exit 1 on failure or non-2xx
//	testapp lookup [--timeout 5s] NAME prints the addresses, one a line, from
//	                                   /etc/resolv.conf (Go's own resolver)
//	testapp sleep                      blocks until SIGTERM or SIGINT
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"
)

const usage = "usage: testapp serve [--listen ADDR] | get [--timeout D] URL | lookup [--timeout D] NAME | sleep"

func main() {
	// As a container's PID 1 the process gets no default action for
	// SIGTERM: stop on it explicitly, so pods end without the grace period.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one subcommand and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	fs := flag.NewFlagSet("testapp "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var err error
	switch args[0] {
	case "serve":
		listen := fs.String("listen", ":8080", "address to serve HTTP on")
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		err = serve(ctx, log, *listen)
	case "get":
		timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
		if fs.Parse(args[1:]) != nil || fs.NArg() != 1 {
			fmt.Fprintln(stderr, "usage: testapp get [--timeout D] URL")
			return 2
		}
		err = get(ctx, fs.Arg(0), *timeout, stdout)
	case "lookup":
		timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
		if fs.Parse(args[1:]) != nil || fs.NArg() != 1 {
			fmt.Fprintln(stderr, "usage: testapp lookup [--timeout D] NAME")
			return 2
		}
		err = lookup(ctx, fs.Arg(0), *timeout, stdout)
	case "sleep":
		<-ctx.Done()
	default:
		fmt.Fprintln(stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "testapp %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// handler answers GET / with the hostname (the pod's name under Kubernetes)
// and GET /healthz with "ok".
func handler(hostname string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, hostname)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return mux
}

func serve(ctx context.Context, log *slog.Logger, listen string) error {
	hostname, err := os.Hostname()
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(hostname), ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving", "addr", l.Addr().String(), "hostname", hostname)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func get(ctx context.Context, url string, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading %s: %w", url, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	_, err = stdout.Write(body)
	return err
}

func lookup(ctx context.Context, name string, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := &net.Resolver{PreferGo: true}
	addrs, err := r.LookupHost(ctx, name)
	if err != nil {
		return err
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		if _, err := fmt.Fprintln(stdout, a); err != nil {
			return err
		}
	}
	return nil
}
