package releasestest

import (
	"testing"

	"github.com/kopsnode/agents/pkg/releases"
	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/pkg/testtools/parts"
)

// The mirror holds the parts make tools built, byte for byte, each with
// its hash beside it.
func TestMirrorFromTestTools(t *testing.T) {
	kopsnode := map[string][]byte{"nodeup": []byte("nodeup"), "protokube": []byte("protokube"), "etcd-manager": []byte("etcd-manager")}
	c := Contents(t, "dev", kopsnode, "testapp")
	m, err := parts.ReadManifest(testtools.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for rel, part := range map[string]string{
		"kubernetes/v" + testtools.KubernetesVersion + "/bin/linux/amd64/kubelet": parts.KubernetesPath("kubelet"),
		"etcd/v3.6.16/etcd":         parts.EtcdPath("3.6.16"),
		"etcd/v3.7.3/etcdutl":       parts.EtcdutlPath("3.7.3"),
		"images/testapp.tar":        parts.ImagePath("testapp"),
		"runc/v1.4.4/runc.amd64":    parts.RuncPath(),
		"images/pause-3.10.1.tar":   parts.ImagePath("pause"),
		"images/coredns-1.15.0.tar": parts.ImagePath("coredns"),
	} {
		p, ok := m.Find(part)
		if !ok {
			t.Fatalf("%s is not in the test tools' manifest", part)
		}
		if sum, err := releases.ParseHashFile(c[rel+releases.HashSuffix]); err != nil || sum != p.SHA256 {
			t.Errorf("%s: mirror hash %s (%v), the built part's %s", rel, sum, err, p.SHA256)
		}
	}
	if b := c["kopsnode/dev/nodeup"]; string(b) != "nodeup" {
		t.Errorf("nodeup on the mirror: %q", b)
	}
	if len(c) != 2*len(Files(t, "dev", "testapp")) {
		t.Errorf("%d mirror entries for %d files", len(c), len(Files(t, "dev", "testapp")))
	}
}
