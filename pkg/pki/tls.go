package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// TLSConfigServer returns a server configuration for mutual TLS: it serves
// kp and requires every client to present a certificate that verifies under
// clientCAs with the clientAuth usage.
func TLSConfigServer(kp *Keypair, clientCAs *x509.CertPool) (*tls.Config, error) {
	cert, err := kp.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("TLS server config: %w", err)
	}
	if clientCAs == nil {
		return nil, errors.New("TLS server config: no client CA pool (mutual TLS needs one)")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
	}, nil
}

// TLSConfigClient returns a client configuration that trusts only rootCAs,
// checks the server's certificate for serverName (a DNS name or an IP
// address) and presents kp as the client certificate. A nil kp dials
// without a client certificate.
func TLSConfigClient(kp *Keypair, rootCAs *x509.CertPool, serverName string) (*tls.Config, error) {
	if rootCAs == nil {
		return nil, errors.New("TLS client config: no root CA pool")
	}
	if serverName == "" {
		return nil, errors.New("TLS client config: empty server name")
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    rootCAs,
		ServerName: serverName,
	}
	if kp != nil {
		cert, err := kp.TLSCertificate()
		if err != nil {
			return nil, fmt.Errorf("TLS client config: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
