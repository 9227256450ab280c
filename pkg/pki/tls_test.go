package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// handshake serves one mutual-TLS connection on a real 127.0.0.1 listener
// with serverCfg and dials it with clientCfg. It returns the server's
// handshake error, the client's error (handshake or first read) and the
// client certificate's CN the server saw.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (serverErr, clientErr error, peerCN string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	type result struct {
		err error
		cn  string
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		sc := tls.Server(conn, serverCfg)
		if err := sc.HandshakeContext(ctx); err != nil {
			done <- result{err: err}
			return
		}
		var cn string
		if pc := sc.ConnectionState().PeerCertificates; len(pc) > 0 {
			cn = pc[0].Subject.CommonName
		}
		_, err = sc.Write([]byte("ok"))
		done <- result{err: err, cn: cn}
	}()

	clientErr = func() error {
		var d tls.Dialer
		d.Config = clientCfg
		conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		// With TLS 1.3 the client finishes before the server has checked
		// its certificate; the verdict arrives with the first read.
		buf := make([]byte, 2)
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != "ok" {
			return errors.New("unexpected reply " + string(buf))
		}
		return nil
	}()
	r := <-done
	return r.err, clientErr, r.cn
}

func TestMutualTLSHandshake(t *testing.T) {
	ks, _ := newKeystoreClock(t, time.Now)
	ca := mustEnsureCA(t, ks, CAEtcdManager("main"), CAOptions{})
	other := mustEnsureCA(t, ks, CAEtcdManager("events"), CAOptions{})
	loopback := []net.IP{net.ParseIP("127.0.0.1")}

	server := mustIssue(t, ca, CertRequest{CommonName: "etcd-manager-a", Usage: UsagePeer, DNSNames: []string{"etcd-a.internal"}, IPs: loopback})
	goodClient := mustIssue(t, ca, CertRequest{CommonName: "etcd-manager-b", Usage: UsagePeer, DNSNames: []string{"etcd-b.internal"}, IPs: loopback})
	clientOnly := mustIssue(t, ca, CertRequest{CommonName: "etcd-manager-ctl", Usage: UsageClient})
	clientWithSAN := mustIssue(t, ca, CertRequest{CommonName: "client-with-ip", Usage: UsageClient, IPs: loopback})
	serverOnly := mustIssue(t, ca, CertRequest{CommonName: "impostor", Usage: UsageServer, IPs: loopback})
	foreign := mustIssue(t, other, CertRequest{CommonName: "etcd-manager-x", Usage: UsagePeer, IPs: loopback})
	foreignServer := mustIssue(t, other, CertRequest{CommonName: "fake-server", Usage: UsagePeer, IPs: loopback})

	cases := []struct {
		name       string
		serverKP   *Keypair
		clientKP   *Keypair
		clientRoot *x509.CertPool
		serverName string
		wantOK     bool
		wantErr    string // in the server's or the client's error
		wantCN     string
		// forceCert sends the client certificate even when its issuer is
		// not among the CAs the server asks for, as an attacker would.
		forceCert bool
	}{
		{name: "good peer cert", serverKP: server, clientKP: goodClient, clientRoot: ca.CertPool(), serverName: "127.0.0.1", wantOK: true, wantCN: "etcd-manager-b"},
		{name: "good client-only cert by DNS name", serverKP: server, clientKP: clientOnly, clientRoot: ca.CertPool(), serverName: "etcd-a.internal", wantOK: true, wantCN: "etcd-manager-ctl"},
		{name: "client cert from another CA", serverKP: server, clientKP: foreign, clientRoot: ca.CertPool(), serverName: "127.0.0.1", wantErr: "unknown authority", forceCert: true},
		{name: "client cert from another CA, not forced", serverKP: server, clientKP: foreign, clientRoot: ca.CertPool(), serverName: "127.0.0.1", wantErr: "certificate required"},
		{name: "no client cert", serverKP: server, clientKP: nil, clientRoot: ca.CertPool(), serverName: "127.0.0.1", wantErr: "certificate"},
		{name: "server-only cert as client", serverKP: server, clientKP: serverOnly, clientRoot: ca.CertPool(), serverName: "127.0.0.1", wantErr: "key usage"},
		{name: "server from another CA", serverKP: foreignServer, clientKP: goodClient, clientRoot: ca.CertPool(), serverName: "127.0.0.1", wantErr: "unknown authority"},
		{name: "server name not in SANs", serverKP: server, clientKP: goodClient, clientRoot: ca.CertPool(), serverName: "etcd-z.internal", wantErr: "etcd-z.internal"},
		{name: "client-only cert as server", serverKP: clientWithSAN, clientKP: goodClient, clientRoot: ca.CertPool(), serverName: "127.0.0.1", wantErr: "incompatible key usage"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scfg, err := TLSConfigServer(tc.serverKP, ca.CertPool())
			if err != nil {
				t.Fatal(err)
			}
			ccfg, err := TLSConfigClient(tc.clientKP, tc.clientRoot, tc.serverName)
			if err != nil {
				t.Fatal(err)
			}
			if tc.forceCert {
				c := ccfg.Certificates[0]
				ccfg.Certificates = nil
				ccfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
			}
			serr, cerr, cn := handshake(t, scfg, ccfg)
			if tc.wantOK {
				if serr != nil || cerr != nil {
					t.Fatalf("handshake failed: server %v, client %v", serr, cerr)
				}
				if cn != tc.wantCN {
					t.Errorf("server saw client CN %q, want %q", cn, tc.wantCN)
				}
				return
			}
			if serr == nil && cerr == nil {
				t.Fatal("handshake succeeded, want failure")
			}
			msg := ""
			if serr != nil {
				msg += "server: " + serr.Error() + "; "
			}
			if cerr != nil {
				msg += "client: " + cerr.Error()
			}
			if !strings.Contains(msg, tc.wantErr) {
				t.Errorf("handshake errors %q do not mention %q", msg, tc.wantErr)
			}
			t.Logf("rejected as expected: %s", msg)
		})
	}
}

func TestTLSConfigRejectsMissingParts(t *testing.T) {
	ks, _ := newKeystoreClock(t, time.Now)
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	kp := mustIssue(t, ca, CertRequest{CommonName: "c", Usage: UsageClient})
	if _, err := TLSConfigServer(nil, ca.CertPool()); err == nil {
		t.Error("TLSConfigServer(nil keypair) succeeded")
	}
	if _, err := TLSConfigServer(kp, nil); err == nil {
		t.Error("TLSConfigServer(nil client CAs) succeeded")
	}
	if _, err := TLSConfigClient(kp, nil, "x"); err == nil {
		t.Error("TLSConfigClient(nil roots) succeeded")
	}
	if _, err := TLSConfigClient(kp, ca.CertPool(), ""); err == nil {
		t.Error("TLSConfigClient(empty server name) succeeded")
	}
	if _, err := TLSConfigClient(&Keypair{}, ca.CertPool(), "x"); err == nil {
		t.Error("TLSConfigClient(empty keypair) succeeded")
	}
	scfg, err := TLSConfigServer(kp, ca.CertPool())
	if err != nil {
		t.Fatal(err)
	}
	if scfg.ClientAuth != tls.RequireAndVerifyClientCert || scfg.MinVersion < tls.VersionTLS12 {
		t.Errorf("server config ClientAuth=%v MinVersion=%x, want RequireAndVerifyClientCert and >= TLS 1.2", scfg.ClientAuth, scfg.MinVersion)
	}
}
