package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A go.mod shaped like k8s.io/kubernetes's (trimmed).
const kubernetesGoMod = `module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
	github.com/blang/semver/v4 v4.0.0
	k8s.io/api v0.0.0
	k8s.io/client-go v0.0.0
)

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/client-go => ./staging/src/k8s.io/client-go
	k8s.io/cri-streaming => ./staging/src/k8s.io/cri-streaming
)
`

// TestRunWritesWrapper runs the command on a go.mod through the real
// `go mod edit -json` and checks the wrapper it writes.
func TestRunWritesWrapper(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "kubernetes.mod")
	if err := os.WriteFile(src, []byte(kubernetesGoMod), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := run(src, "1.37.2", out, []string{"k8s.io/kubernetes/cmd/kubelet", "k8s.io/kubernetes/cmd/kubectl"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{
		"\ngo 1.26.0\n",
		"\ngodebug default=go1.26\n",
		"\nrequire k8s.io/kubernetes v1.37.2\n",
		"\tk8s.io/kubernetes/cmd/kubelet\n\tk8s.io/kubernetes/cmd/kubectl\n",
		"\tk8s.io/api => k8s.io/api v0.37.2\n",
		"\tk8s.io/client-go => k8s.io/client-go v0.37.2\n",
		"\tk8s.io/cri-streaming => k8s.io/cri-streaming v0.37.2\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("wrapper go.mod lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "./staging") {
		t.Errorf("wrapper go.mod keeps a ./staging path:\n%s", got)
	}
	// The wrapper is a go.mod that go parses, and is not taken for
	// k8s.io/kubernetes's own.
	if err := run(filepath.Join(out, "go.mod"), "1.37.2", t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "want k8s.io/kubernetes") {
		t.Errorf("the wrapper itself taken as kubernetes's go.mod: %v", err)
	}
}

func TestWrapperGoModErrors(t *testing.T) {
	var k goModJSON
	k.Module.Path = "k8s.io/kubernetes"
	if _, err := WrapperGoMod(k, "v1.37.2", nil); err == nil || !strings.Contains(err.Error(), "--version") {
		t.Errorf("version with a v: %v", err)
	}
	if _, err := WrapperGoMod(k, "1.37.2", nil); err == nil || !strings.Contains(err.Error(), "staging") {
		t.Errorf("no staging replaces: %v", err)
	}
	if err := run(filepath.Join(t.TempDir(), "missing.mod"), "1.37.2", t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "missing.mod") {
		t.Errorf("missing go.mod: %v, want an error naming it", err)
	}
}
