// Package testtools finds and starts the real servers that tests run against
// (MinIO, fake-gcs-server, etcd of a given version, CoreDNS), built by
// tools/build-test-tools.sh (make tools) into a cache directory.
package testtools

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// DefaultDir is where make tools puts the test tools unless TOOLS_DIR says otherwise.
const DefaultDir = "/var/cache/kopsnode-test-tools"

// Dir returns the tools cache directory.
func Dir() string {
	if d := os.Getenv("TOOLS_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

// Binary returns the path of a built tool (minio, fake-gcs-server, coredns),
// failing the test with what to run when it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(Dir(), "bin", name)
	if _, err := os.Stat(p); err != nil {
		if lp, lerr := exec.LookPath(name); lerr == nil {
			return lp
		}
		t.Fatalf("test tool %s not found at %s: run `make tools` (TOOLS_DIR=%s)", name, p, Dir())
	}
	return p
}

// EtcdBinDir returns the directory holding the etcd binary of a version
// ("3.5.21"), laid out as etcd-manager expects in production.
func EtcdBinDir(t testing.TB, version string) string {
	t.Helper()
	d := EtcdVersionsDir()
	p := filepath.Join(d, "v"+version, "etcd")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("etcd %s not found at %s: run `make tools` (TOOLS_DIR=%s)", version, p, Dir())
	}
	return filepath.Dir(p)
}

// EtcdutlBin returns the path of the etcdutl binary of a version, which
// make tools builds beside etcd (etcd/v<version>/etcdutl).
func EtcdutlBin(t testing.TB, version string) string {
	t.Helper()
	p := filepath.Join(EtcdVersionsDir(), "v"+version, "etcdutl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("etcdutl %s not found at %s: run `make tools` (TOOLS_DIR=%s)", version, p, Dir())
	}
	return p
}

// EtcdVersionsDir is the directory with one v<version>/ directory per etcd version.
func EtcdVersionsDir() string { return filepath.Join(Dir(), "etcd") }

// RequireRoot fails the test when not running as root; the harnesses that
// make network namespaces, loop devices and booted machines need it.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("%s needs root (network namespaces, loop devices or systemd-nspawn); run the tests as root", t.Name())
	}
}
