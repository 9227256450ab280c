// Command partsmanifest writes parts.json in the test-tools cache: every
// part tools/build-test-tools.sh has built, with its version and sha256, so
// tests and a local asset mirror find them without knowing the script.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/kopsnode/agents/pkg/testtools/parts"
)

func main() {
	dir := flag.String("dir", "", "the test-tools cache directory (TOOLS_DIR)")
	etcd := flag.String("etcd-versions", strings.Join(parts.EtcdVersions(), " "), "space-separated etcd versions the cache holds (ETCD_VERSIONS)")
	flag.Parse()
	if err := run(*dir, strings.Fields(*etcd)); err != nil {
		slog.Error("partsmanifest", "err", err)
		os.Exit(1)
	}
}

func run(dir string, etcdVersions []string) error {
	if dir == "" {
		return fmt.Errorf("--dir is required")
	}
	m, missing, err := parts.Scan(dir, etcdVersions)
	if err != nil {
		return err
	}
	if err := parts.WriteManifest(dir, m); err != nil {
		return err
	}
	slog.Info("wrote parts manifest", "path", filepath.Join(dir, parts.ManifestFile), "parts", len(m.Parts), "not_built", len(missing))
	if len(missing) > 0 {
		slog.Info("parts not built (yet)", "paths", strings.Join(missing, " "))
	}
	return nil
}
