package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store/file"
)

type fakeNode struct{ joins []JoinRequest }

func (f *fakeNode) Info(context.Context) (Info, error) {
	return Info{ID: "a", DataDirEmpty: true}, nil
}
func (f *fakeNode) Join(_ context.Context, r JoinRequest) error {
	if r.ClusterToken == "refuse" {
		return errors.New("refused on purpose")
	}
	f.joins = append(f.joins, r)
	return nil
}
func (f *fakeNode) Leave(context.Context, LeaveRequest) error   { return nil }
func (f *fakeNode) Rotate(context.Context, RotateRequest) error { return nil }

func newCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := pki.NewKeystore(st, "c/pki", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ks.EnsureCA(context.Background(), name, pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *pki.CA, cn string) func() (*tls.Certificate, error) {
	t.Helper()
	kp, err := ca.Issue(pki.CertRequest{CommonName: cn, Usage: pki.UsagePeer, IPs: []net.IP{net.ParseIP("127.44.0.2"), net.ParseIP("127.44.0.3")}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return func() (*tls.Certificate, error) { return &c, nil }
}

// TestMutualTLS: a peer with a certificate from the etcd-manager CA is
// served; a peer with a certificate from another CA is refused in the
// handshake, and a client refuses a server from another CA.
func TestMutualTLS(t *testing.T) {
	good := newCA(t, pki.CAEtcdManager("main"))
	other := newCA(t, pki.CAEtcdManager("main")) // same name, other key: another trust domain
	node := &fakeNode{}
	srv, err := Serve("127.44.0.2:0", ServerTLS(good.CertPool(), issue(t, good, "server")), node, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ok := NewClient(ClientTLS(good.CertPool(), issue(t, good, "client")), "127.44.0.3", 3*time.Second)
	defer ok.Close()
	info, err := ok.Info(ctx, srv.Addr())
	if err != nil || info.ID != "a" {
		t.Fatalf("Info with a valid certificate = %+v, %v", info, err)
	}
	if err := ok.Join(ctx, srv.Addr(), JoinRequest{ClusterToken: "t", State: "new"}); err != nil || len(node.joins) != 1 {
		t.Fatalf("Join = %v (joins %d)", err, len(node.joins))
	}
	if err := ok.Join(ctx, srv.Addr(), JoinRequest{ClusterToken: "refuse"}); err == nil || !strings.Contains(err.Error(), "refused on purpose") {
		t.Fatalf("Join refused by node = %v", err)
	}

	bad := NewClient(ClientTLS(good.CertPool(), issue(t, other, "intruder")), "127.44.0.3", 3*time.Second)
	defer bad.Close()
	if _, err := bad.Info(ctx, srv.Addr()); err == nil {
		t.Fatal("a client with a certificate from another CA was served")
	} else if !strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "tls") {
		t.Fatalf("unexpected error for foreign client cert: %v", err)
	}
	none := NewClient(ClientTLS(good.CertPool(), func() (*tls.Certificate, error) { return &tls.Certificate{}, nil }), "", 3*time.Second)
	defer none.Close()
	if _, err := none.Info(ctx, srv.Addr()); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	// A client of the right CA refuses a server from another CA.
	fake, err := Serve("127.44.0.2:0", ServerTLS(other.CertPool(), issue(t, other, "fake-server")), node, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	if _, err := ok.Info(ctx, fake.Addr()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client accepted a server from another CA: %v", err)
	}
	if len(node.joins) != 1 {
		t.Fatalf("node saw %d joins, want 1", len(node.joins))
	}
}
