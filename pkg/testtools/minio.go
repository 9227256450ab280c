package testtools

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// MinIOOptions configures StartMinIO.
type MinIOOptions struct {
	// Versioning starts MinIO on an erasure set of four folders, which bucket
	// versioning needs (a single-folder MinIO refuses it). Slightly slower to
	// start; leave it off unless a test needs versioned buckets.
	Versioning bool
	// ReadyTimeout bounds the wait for /minio/health/ready; 0 means 60s.
	ReadyTimeout time.Duration
	// IP is the address the S3 API listens on; default 127.0.0.1. A test
	// whose machines reach MinIO over a test network gives the test
	// process's address on it (netns.Network.HostAddr).
	IP string
}

// MinIO is a real MinIO server started by a test on 127.0.0.1 with a
// temporary data directory and throwaway credentials. It is killed (by its
// process id) in t.Cleanup.
type MinIO struct {
	// Endpoint is the server's URL, "http://127.0.0.1:PORT".
	Endpoint  string
	AccessKey string
	SecretKey string
	// Region is the region MinIO answers for.
	Region string

	bin, dataDir, logPath, addr, consoleAddr string
	drives                                   string
	readyTimeout                             time.Duration

	mu  sync.Mutex // guards cmd and done
	cmd *exec.Cmd
	// done is closed when cmd's process has been waited for.
	done chan struct{}
}

// StartMinIO starts MinIO and waits until it is ready. It fails the test
// (with the tail of the server log) if the server does not come up.
func StartMinIO(t testing.TB, opts MinIOOptions) *MinIO {
	t.Helper()
	bin := Binary(t, "minio")
	dir := t.TempDir()
	m := &MinIO{
		AccessKey:    "test-" + randomHex(t, 6),
		SecretKey:    randomHex(t, 20),
		Region:       "us-east-1",
		bin:          bin,
		dataDir:      filepath.Join(dir, "data"),
		logPath:      filepath.Join(dir, "minio.log"),
		readyTimeout: opts.ReadyTimeout,
	}
	if m.readyTimeout == 0 {
		m.readyTimeout = 60 * time.Second
	}
	m.drives = m.dataDir
	if opts.Versioning {
		for i := 1; i <= 4; i++ {
			if err := os.MkdirAll(filepath.Join(m.dataDir, fmt.Sprintf("d%d", i)), 0o755); err != nil {
				t.Fatalf("minio: creating data folder: %v", err)
			}
		}
		m.drives = filepath.Join(m.dataDir, "d{1...4}")
	} else if err := os.MkdirAll(m.dataDir, 0o755); err != nil {
		t.Fatalf("minio: creating data folder: %v", err)
	}
	t.Cleanup(func() { m.stop() })

	// A free port can be taken by someone else between our probe and MinIO's
	// bind; try a few ports before giving up.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		m.addr = freeAddrOn(t, opts.IP)
		m.consoleAddr = freeAddr(t)
		m.Endpoint = "http://" + m.addr
		if lastErr = m.start(); lastErr == nil {
			return m
		}
		m.stop()
	}
	t.Fatalf("minio: %v", lastErr)
	return nil
}

// Kill stops the server abruptly (SIGKILL) and waits for it to exit. The data
// directory is kept, so Restart brings the same server back.
func (m *MinIO) Kill(t testing.TB) {
	t.Helper()
	m.stop()
}

// Restart starts the server again on the same address and data directory
// after Kill, and waits until it is ready.
func (m *MinIO) Restart(t testing.TB) {
	t.Helper()
	m.stop()
	if err := m.start(); err != nil {
		t.Fatalf("minio restart: %v", err)
	}
}

// Client returns an S3 client for the server with its credentials and
// path-style addressing, for test setup and checks.
func (m *MinIO) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       m.Region,
		BaseEndpoint: aws.String(m.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		// MinIO validates checksums, but asking for them only when an
		// operation requires them keeps requests simple for tests.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// CreateBucket creates a bucket, with versioning enabled when versioned is
// true (which needs MinIOOptions.Versioning).
func (m *MinIO) CreateBucket(t testing.TB, name string, versioned bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := m.Client()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("minio: creating bucket %s: %v", name, err)
	}
	if versioned {
		_, err := c.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{
			Bucket:                  aws.String(name),
			VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled},
		})
		if err != nil {
			t.Fatalf("minio: enabling versioning on bucket %s: %v", name, err)
		}
	}
}

// Log returns the server's output so far, for failure messages.
func (m *MinIO) Log() string {
	b, _ := os.ReadFile(m.logPath)
	return string(b)
}

func (m *MinIO) start() error {
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(m.bin, "server",
		"--address", m.addr,
		"--console-address", m.consoleAddr,
		"--certs-dir", filepath.Join(filepath.Dir(m.dataDir), "certs"),
		"--quiet",
		m.drives)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_REGION="+m.Region,
		"MINIO_CI_CD=1",
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"HOME="+filepath.Dir(m.dataDir),
	)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", m.bin, err)
	}
	done := make(chan struct{})
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	if err := waitReady(m.Endpoint+"/minio/health/ready", m.readyTimeout, done); err != nil {
		return fmt.Errorf("server on %s not ready: %w\n--- minio log ---\n%s", m.addr, err, tail(m.Log(), 4000))
	}
	// An erasure set reports ready before it takes S3 requests
	// (XMinioServerNotInitialized); wait for a real request to succeed.
	if err := m.waitS3(done); err != nil {
		return fmt.Errorf("server on %s not serving S3: %w\n--- minio log ---\n%s", m.addr, err, tail(m.Log(), 4000))
	}
	return nil
}

func (m *MinIO) waitS3(exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), m.readyTimeout)
	defer cancel()
	c := s3.New(s3.Options{
		Region:           m.Region,
		BaseEndpoint:     aws.String(m.Endpoint),
		UsePathStyle:     true,
		Credentials:      credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		RetryMaxAttempts: 1,
	})
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("server exited")
		case <-ctx.Done():
			return fmt.Errorf("ListBuckets kept failing for %s: %w", m.readyTimeout, err)
		case <-tick.C:
		}
	}
}

// stop kills the server if it runs and waits for it to exit.
func (m *MinIO) stop() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd, m.done = nil, nil
	m.mu.Unlock()
	killAndWait(cmd, done)
}

// killAndWait sends SIGKILL to cmd's process (by its pid) and waits until the
// goroutine waiting on it has seen it exit.
func killAndWait(cmd *exec.Cmd, done chan struct{}) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Kill()
	<-done
}

// waitReady polls url until it answers 200, the deadline passes, or exited
// is closed (the server died).
func waitReady(url string, timeout time.Duration, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-exited:
			return errors.New("server exited")
		case <-ctx.Done():
			return fmt.Errorf("no answer within %s (last: %v)", timeout, last)
		case <-tick.C:
		}
	}
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	return freeAddrOn(t, "")
}

// freeAddrOn returns ip:port with a port that was free a moment ago; ip
// defaults to 127.0.0.1.
func freeAddrOn(t testing.TB, ip string) string {
	t.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("finding a free port on %s: %v", ip, err)
	}
	defer l.Close()
	return net.JoinHostPort(ip, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
