package tasks

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/internal/nodeuptest"
	"github.com/kopsnode/agents/nodeup/kuberender"
	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/pki"
)

func TestBootstrapKubeconfigAndCACertWithoutCAKey(t *testing.T) {
	ctx := context.Background()
	s, _ := nodeuptest.Store(t)
	ks, err := pki.NewKeystore(s, "c/pki", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	e, _ := env(t, root)
	bk := &BootstrapKubeconfig{Path: "/var/lib/kubelet/bootstrap-kubeconfig", Server: "https://api.internal.c", CA: pki.CAKubernetes, Keystore: ks, Store: s, Cluster: "c"}
	cf := &CACertFile{Path: "/etc/kubernetes/pki/ca.crt", CA: pki.CAKubernetes, Keystore: ks}

	// Empty store: clear errors naming what is missing; no CA is created.
	if _, err := cf.Find(ctx, e); err == nil || !strings.Contains(err.Error(), "ca.crt") {
		t.Fatalf("CA cert missing: %v", err)
	}
	if _, err := ks.LoadCA(ctx, pki.CAKubernetes); err == nil {
		t.Fatal("a worker task created a CA")
	}
	ca, err := ks.EnsureCA(ctx, pki.CAKubernetes, pki.CAOptions{}) // the control plane
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bk.Find(ctx, e); err == nil || !strings.Contains(err.Error(), bootstraptoken.StoreKey) {
		t.Fatalf("token missing: %v", err)
	}

	// The control plane's task creates the token once.
	bt := &BootstrapToken{Store: s, Cluster: "c"}
	if d := converge(t, e, bt); d == nil {
		t.Fatal("no token created")
	}
	tok, err := bootstraptoken.Read(ctx, s, "c")
	if err != nil {
		t.Fatal(err)
	}

	if d := converge(t, e, cf); d == nil {
		t.Fatal("CA cert not written")
	}
	b, _ := os.ReadFile(filepath.Join(root, "etc/kubernetes/pki/ca.crt"))
	if !bytes.Equal(b, ca.CertPEM()) {
		t.Error("ca.crt is not the CA's certificate")
	}
	d := converge(t, e, bk)
	if d == nil {
		t.Fatal("bootstrap kubeconfig not written")
	}
	var plan strings.Builder
	d.Render(&plan)
	if strings.Contains(plan.String(), tok.Secret) {
		t.Error("the plan shows the token")
	}
	p := filepath.Join(root, "var/lib/kubelet/bootstrap-kubeconfig")
	kb, _ := os.ReadFile(p)
	kc, err := kuberender.ParseKubeconfig(kb)
	if err != nil {
		t.Fatal(err)
	}
	if kc.Credentials.Token != tok.String() || kc.Server != bk.Server || !bytes.Equal(kc.CAPEM, ca.CertPEM()) || len(kc.Credentials.ClientKeyPEM) > 0 {
		t.Errorf("bootstrap kubeconfig %+v", kc)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}

	// Once the token has expired (the control plane did not replace it),
	// a worker's run fails with an error naming the token, its expiry and
	// the store key; it is retried, not permanent, and nothing is written.
	issued, err := bootstraptoken.ReadUsable(ctx, s, "c", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	late := *bk
	late.Path = "/var/lib/kubelet/late-bootstrap-kubeconfig"
	late.Now = func() time.Time { return issued.Expires.Add(time.Minute) }
	_, err = late.Find(ctx, e)
	var expired *bootstraptoken.ExpiredError
	if !errors.As(err, &expired) {
		t.Fatalf("Find with an expired token: %v", err)
	}
	for _, want := range []string{issued.Token.ID, issued.Expires.UTC().Format(time.RFC3339), "c/" + bootstraptoken.StoreKey, "expired", late.Path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	var perm *engine.Permanent
	if errors.As(err, &perm) || strings.Contains(err.Error(), issued.Token.Secret) {
		t.Errorf("the expired-token error is permanent or shows the secret: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, late.Path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a bootstrap kubeconfig with an expired token was written: %v", err)
	}

	// A node that has joined (the kubelet holds a valid certificate of its
	// own) keeps its bootstrap kubeconfig as it is: an expired or rotated
	// token neither fails its run nor changes the file (which would
	// restart the kubelet).
	kp, err := ca.Issue(pki.CertRequest{CommonName: "system:node:n1", Organization: []string{"system:nodes"}, Usage: pki.UsageClient, Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	certPath := "/var/lib/kubelet/pki/kubelet-client-current.pem"
	if err := os.MkdirAll(filepath.Join(root, "var/lib/kubelet/pki"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, certPath), pki.EncodeCertPEM(kp.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	joined := *bk
	joined.JoinedCert = certPath
	joined.Now = late.Now
	if d, err := joined.Find(ctx, e); d != nil || err != nil {
		t.Errorf("a joined node's bootstrap kubeconfig with an expired token: diff %v, error %v; want neither", d, err)
	}
	// Its certificate expired too: the node must bootstrap again, and the
	// expired token is the error again.
	joined.Now = func() time.Time { return kp.Cert.NotAfter.Add(time.Minute) }
	if _, err := joined.Find(ctx, e); !errors.As(err, &expired) {
		t.Errorf("a node whose certificate expired, with an expired token: %v", err)
	}
}

// ctrFake plays containerd for `ctr images import`: the imported
// manifests land in the content store under root.
type ctrFake struct {
	nodeuptest.Runner
	root, contentDir string
	digests          []string
}

func (c *ctrFake) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	c.Runner.Run(ctx, name, args...)
	if slices.Contains(args, "import") {
		for _, d := range c.digests {
			p := filepath.Join(c.root, c.contentDir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte("manifest"), 0o644)
		}
	}
	return nil, nil
}

func ociArchive(t *testing.T, index string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, content := range map[string]string{"oci-layout": `{"imageLayoutVersion":"1.0.0"}`, "index.json": index} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))})
		tw.Write([]byte(content))
	}
	tw.Close()
	return b.Bytes()
}

func TestImageImportPinnedAndIdempotent(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	e, _ := env(t, root)
	e.Log = discard()
	const contentDir = "/var/lib/containerd/io.containerd.content.v1.content"
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	ctr := &ctrFake{root: root, contentDir: contentDir, digests: []string{digest}}
	e.Exec = ctr
	data := ociArchive(t, `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"`+digest+`","annotations":{"io.containerd.image.name":"registry.k8s.io/pause:3.10.1","org.opencontainers.image.ref.name":"3.10.1"}}]}`)
	a := &Asset{Name: "image-pause", SHA256: nodeuptest.Asset{Data: data}.SHA256()}
	if err := e.FS.WriteFile(a.CachePath(), data, 0o644, fsroot.RootOwner); err != nil {
		t.Fatal(err)
	}
	im := &ImageImport{Asset: a, Ctr: "/usr/local/bin/ctr", Socket: "/run/containerd/containerd.sock", ContentDir: contentDir}

	// Without a live systemd (containerd not running) there is nothing to do.
	if d, err := im.Find(ctx, e); d != nil || err != nil {
		t.Fatalf("no systemd: %v %v", d, err)
	}
	e.Systemd = nodeuptest.NewSystemd(root)
	d := converge(t, e, im).(*ImageImportDiff)
	if !slices.Equal(d.Images, []string{"registry.k8s.io/pause:3.10.1"}) {
		t.Errorf("images %v", d.Images)
	}
	hostArchive := filepath.Join(root, a.CachePath())
	want := "/usr/local/bin/ctr --address /run/containerd/containerd.sock -n k8s.io images import --label io.cri-containerd.pinned=pinned " + hostArchive
	if cmds := ctr.Commands(); len(cmds) != 1 || cmds[0] != want {
		t.Errorf("commands %q, want only %q", cmds, want)
	}
	// A converged re-run runs no command.
	if d, err := im.Find(ctx, e); d != nil || err != nil || len(ctr.Commands()) != 1 {
		t.Errorf("re-run: %v %v %q", d, err, ctr.Commands())
	}
	// containerd's store was wiped: imported again.
	if err := os.RemoveAll(filepath.Join(root, "var/lib/containerd")); err != nil {
		t.Fatal(err)
	}
	if d := converge(t, e, im).(*ImageImportDiff); !strings.Contains(d.Reason, "missing") {
		t.Errorf("reason %q", d.Reason)
	}
	if len(ctr.Commands()) != 2 {
		t.Errorf("commands %q", ctr.Commands())
	}

	// An archive that names no image is a clear, permanent error.
	bad := ociArchive(t, `{"schemaVersion":2,"manifests":[{"digest":"`+digest+`","annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`)
	ba := &Asset{Name: "image-bad", SHA256: nodeuptest.Asset{Data: bad}.SHA256()}
	e.FS.WriteFile(ba.CachePath(), bad, 0o644, fsroot.RootOwner)
	_, err := (&ImageImport{Asset: ba, Ctr: "ctr", Socket: "/s", ContentDir: contentDir}).Find(ctx, e)
	var perm *engine.Permanent
	if err == nil || !strings.Contains(err.Error(), "image-bad") || !errors.As(err, &perm) {
		t.Errorf("bad archive: %v", err)
	}
}
