package backup_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kopsnode/agents/pkg/testtools"
)

// etcdVersions are the versions the backups are taken from.
var etcdVersions = []string{"3.5.21", "3.6.16", "3.7.3"}

// startEtcd runs a real single-member etcd of version on ip (plain HTTP on
// loopback: the backup code does not care how the client connects) and
// returns a client for it. The process is killed by its pid in cleanup.
func startEtcd(t testing.TB, version, ip string) *clientv3.Client {
	t.Helper()
	bin := filepath.Join(testtools.EtcdBinDir(t, version), "etcd")
	dir := t.TempDir()
	client := fmt.Sprintf("http://%s:12479", ip)
	peer := fmt.Sprintf("http://%s:12480", ip)
	logPath := filepath.Join(dir, "etcd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--name", "n1", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "n1="+peer, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = cmd.Wait()
		_ = logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("etcd %s log:\n%s", version, b)
		}
	})
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Put(ctx, "/ready", "1")
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd %s on %s did not answer: %v", version, client, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
