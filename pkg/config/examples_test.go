package config

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files (examples/bad/*.golden, testdata/*.golden)")

// examplesDir is the repository's examples folder, relative to this package.
const examplesDir = "../../examples"

// exampleFiles lists the valid example documents (everything but bad/).
func exampleFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(examplesDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "bad" {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".yaml") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listing examples: %v", err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d example files under %s, want at least cluster.yaml and two node configurations", len(files), examplesDir)
	}
	return files
}

// badFiles lists the invalid example documents.
func badFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(examplesDir, "bad", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("found %d bad examples, want at least 10", len(files))
	}
	return files
}

func TestExamplesParseAndValidate(t *testing.T) {
	for _, path := range exampleFiles(t) {
		t.Run(path, func(t *testing.T) {
			rel, _ := filepath.Rel(examplesDir, path)
			wantNodeConfig := strings.HasPrefix(rel, "nodeup"+string(filepath.Separator))
			if wantNodeConfig {
				n, err := LoadNodeConfigFile(path)
				if err != nil {
					t.Fatalf("LoadNodeConfigFile: %v", err)
				}
				if n.Metadata.Name+".yaml" != filepath.Base(path) {
					t.Errorf("metadata.name %q does not match the file name %s", n.Metadata.Name, filepath.Base(path))
				}
			} else {
				if _, err := LoadClusterFile(path); err != nil {
					t.Fatalf("LoadClusterFile: %v", err)
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := Parse(data, rel)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if _, isNode := doc.(*NodeConfig); isNode != wantNodeConfig {
				t.Errorf("Parse returned a %T for %s", doc, rel)
			}
		})
	}
}

// TestExamplesAgree checks that the node configurations match the cluster
// spec they belong to, as a generator would have written them.
func TestExamplesAgree(t *testing.T) {
	c, err := LoadClusterFile(filepath.Join(examplesDir, "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metadata.Name != "example.k8s.local" || c.Spec.Gossip == nil || len(c.Spec.EtcdClusters) != 2 {
		t.Fatalf("cluster.yaml is not the gossip cluster example.k8s.local with two etcd clusters: %+v", c)
	}
	for _, e := range c.Spec.EtcdClusters {
		if e.Members != 3 {
			t.Errorf("etcd cluster %s has %d members, want 3", e.Name, e.Members)
		}
	}
	cpHash, _ := Canonical(&Cluster{TypeMeta: c.TypeMeta, Spec: ClusterSpec{EtcdClusters: c.Spec.EtcdClusters}})
	for _, name := range []string{"control-plane", "nodes"} {
		n, err := LoadNodeConfigFile(filepath.Join(examplesDir, "nodeup", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if n.Spec.ClusterName != c.Metadata.Name || n.Spec.KubernetesVersion != c.Spec.KubernetesVersion {
			t.Errorf("%s: clusterName %q, kubernetesVersion %q; cluster.yaml has %q, %q", name, n.Spec.ClusterName, n.Spec.KubernetesVersion, c.Metadata.Name, c.Spec.KubernetesVersion)
		}
		if n.Spec.Networking != c.Spec.Networking {
			t.Errorf("%s: networking %+v differs from cluster.yaml's %+v", name, n.Spec.Networking, c.Spec.Networking)
		}
		if n.Spec.Role == RoleControlPlane {
			got, _ := Canonical(&Cluster{TypeMeta: c.TypeMeta, Spec: ClusterSpec{EtcdClusters: n.Spec.EtcdClusters}})
			if string(got) != string(cpHash) {
				t.Errorf("%s: etcdClusters differ from cluster.yaml's:\n%s\n%s", name, got, cpHash)
			}
		}
	}
}

func TestExamplesBadGolden(t *testing.T) {
	for _, path := range badFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			source := "bad/" + name
			_, err = Parse(data, source)
			if err == nil {
				t.Fatalf("Parse(%s) succeeded, want errors", source)
			}
			var es *Errors
			if !errors.As(err, &es) || len(*es) == 0 {
				t.Fatalf("error is a %T, want a non-empty *config.Errors: %v", err, err)
			}
			for _, fe := range *es {
				if fe.Source != source {
					t.Errorf("error %q names source %q, want %q", fe, fe.Source, source)
				}
				if name != "empty.yaml" && fe.Line == 0 {
					t.Errorf("error %q has no line number", fe)
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(path, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("errors differ from %s (run with -update to accept)\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

// TestDocsExamplesValid keeps the complete documents shown in the
// configuration reference valid.
func TestDocsExamplesValid(t *testing.T) {
	data, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, block := range strings.Split(string(data), "```yaml\n")[1:] {
		body, _, ok := strings.Cut(block, "```")
		if !ok || !strings.HasPrefix(body, "apiVersion:") {
			continue
		}
		found++
		if _, err := Parse([]byte(body), "docs/configuration.md"); err != nil {
			t.Errorf("example %d in the reference is invalid:\n%v\n%s", found, err, body)
		}
	}
	if found < 2 {
		t.Errorf("found %d complete examples in docs/configuration.md, want one per kind", found)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	if _, err := LoadNodeConfigFile(missing); err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxDocumentSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadClusterFile(big)
	var es *Errors
	if !errors.As(err, &es) || (*es)[0].Source != big || !strings.Contains(err.Error(), "larger than the limit") {
		t.Errorf("big file: %v", err)
	}
	// A file of the wrong kind names the file.
	_, err = LoadClusterFile(filepath.Join(examplesDir, "nodeup", "nodes.yaml"))
	if err == nil || !strings.HasPrefix(err.Error(), filepath.Join(examplesDir, "nodeup", "nodes.yaml")+":") {
		t.Errorf("wrong kind: %v", err)
	}
	// ValidateCluster and ValidateNodeConfig accept the loaded examples.
	c, err := LoadClusterFile(filepath.Join(examplesDir, "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateCluster(c); err != nil {
		t.Error(err)
	}
	n, err := LoadNodeConfigFile(filepath.Join(examplesDir, "nodeup", "nodes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateNodeConfig(n); err != nil {
		t.Error(err)
	}
}
