package etcdprocess

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBinaryPathUnknownVersion(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "v3.6.16"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "v3.6.16", "etcd"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := BinaryPath(root, "3.6.16"); err != nil || p != filepath.Join(root, "v3.6.16", "etcd") {
		t.Fatalf("BinaryPath(3.6.16) = %q, %v", p, err)
	}
	_, err := BinaryPath(root, "3.9.1")
	if err == nil {
		t.Fatal("unknown version accepted")
	}
	for _, want := range []string{"3.9.1", filepath.Join(root, "v3.9.1", "etcd"), "available in " + root + ": 3.6.16"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	cfg := Config{BinDirRoot: root, Version: "3.9.1", Name: "a", DataDir: t.TempDir(), InitialClusterState: "new",
		ListenPeerURLs: []string{"https://127.0.0.1:1"}, AdvertisePeerURLs: []string{"https://127.0.0.1:1"},
		ListenClientURLs: []string{"https://127.0.0.1:2"}, AdvertiseClientURLs: []string{"https://127.0.0.1:2"}}
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "etcd version 3.9.1 is not installed") {
		t.Fatalf("Start with unknown version = %v", err)
	}
}
