package pki

import "crypto/x509"

// ParseCertPEM parses the first CERTIFICATE block of data: for readers of
// certificates embedded in files the suite writes (kubeconfigs).
func ParseCertPEM(data []byte) (*x509.Certificate, error) { return parseCertPEM(data) }

// EncodeCertPEM encodes a certificate as one PEM CERTIFICATE block.
func EncodeCertPEM(c *x509.Certificate) []byte { return encodeCertPEM(c) }
