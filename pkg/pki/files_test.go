package pki

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteKeypairFilesModesAndContent(t *testing.T) {
	ks, _, _ := newKeystore(t)
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	kp := mustIssue(t, ca, CertRequest{CommonName: "kubelet", Usage: UsageClient})

	dir := t.TempDir()
	certPath := filepath.Join(dir, "etc", "kubernetes", "pki", "kubelet.crt")
	keyPath := filepath.Join(dir, "etc", "kubernetes", "pki", "private", "kubelet.key")
	// A pre-existing world-readable key file must end up 0600.
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := kp.WriteKeypairFiles(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
		want []byte
	}{
		{certPath, 0o644, kp.CertPEM},
		{keyPath, 0o600, kp.KeyPEM},
	} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != f.mode {
			t.Errorf("%s mode %o, want %o", f.path, fi.Mode().Perm(), f.mode)
		}
		got, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.want) {
			t.Errorf("%s content differs", f.path)
		}
	}
	certPEM, _ := os.ReadFile(certPath)
	keyPEM, _ := os.ReadFile(keyPath)
	back, err := ParseKeypairPEM(certPEM, keyPEM)
	if err != nil || !back.Cert.Equal(kp.Cert) {
		t.Errorf("files do not parse back to the keypair: %v", err)
	}
	assertNoTemps(t, filepath.Dir(certPath))
	assertNoTemps(t, filepath.Dir(keyPath))
}

// A failed write leaves neither a partial target nor a temp file, and the
// error names the path.
func TestWriteFileAtomicFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "key.pem")
	// A non-empty directory at the target makes the rename fail.
	if err := os.MkdirAll(filepath.Join(target, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := WriteFileAtomic(target, []byte("secret"), 0o600)
	if err == nil || !strings.Contains(err.Error(), target) {
		t.Fatalf("WriteFileAtomic onto a directory: %v, want an error naming %s", err, target)
	}
	assertNoTemps(t, dir)

	var empty *Keypair
	if err := empty.WriteKeypairFiles(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err == nil {
		t.Error("WriteKeypairFiles of a nil keypair succeeded")
	}
}

func TestPrivateFileWrittenPrivate(t *testing.T) {
	out := []byte("a kubeconfig with a client key\n")
	p := filepath.Join(t.TempDir(), "var", "lib", "kubelet", "kubeconfig")
	if err := WriteFileAtomic(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private file mode %o, want 600", fi.Mode().Perm())
	}
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temp file %s left in %s", e.Name(), dir)
		}
	}
}
