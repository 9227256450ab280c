package pki

import (
	"crypto/x509"
	"encoding/pem"
	"math"
	"time"
)

// RemainingLife is how long cert stays valid after now; negative once it
// has expired, and zero for a nil certificate.
func RemainingLife(cert *x509.Certificate, now time.Time) time.Duration {
	if cert == nil {
		return 0
	}
	return cert.NotAfter.Sub(now)
}

// NeedsRotation reports whether cert should be replaced at now: when it is
// missing, has expired, or has less than fraction of its lifetime (NotAfter
// minus NotBefore) left. DefaultRotationFraction (1/3) is the suite's
// threshold. A fraction that is NaN or not above zero means "only when
// expired"; one of 1 or more means "always".
func NeedsRotation(cert *x509.Certificate, now time.Time, fraction float64) bool {
	if cert == nil {
		return true
	}
	remaining := RemainingLife(cert, now)
	if remaining <= 0 {
		return true
	}
	if math.IsNaN(fraction) || fraction <= 0 {
		return false
	}
	if fraction >= 1 {
		return true
	}
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	if lifetime <= 0 {
		return true
	}
	threshold := time.Duration(float64(lifetime) * fraction)
	return remaining < threshold
}

func encodeCertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
