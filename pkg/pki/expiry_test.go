package pki

import (
	"crypto/x509"
	"math"
	"testing"
	"time"
)

func TestNeedsRotationAndRemainingLife(t *testing.T) {
	clk := newFakeClock()
	start := clk.Now()
	// A 90-day certificate: with fraction 1/3 it needs rotation once fewer
	// than 30 days remain, i.e. from day 60 on.
	cert := &x509.Certificate{NotBefore: start, NotAfter: start.Add(90 * 24 * time.Hour)}
	day := 24 * time.Hour
	cases := []struct {
		name      string
		at        time.Duration // after start
		fraction  float64
		want      bool
		remaining time.Duration
	}{
		{"fresh", 0, DefaultRotationFraction, false, 90 * day},
		{"day 59", 59 * day, DefaultRotationFraction, false, 31 * day},
		{"exactly a third left", 60 * day, DefaultRotationFraction, false, 30 * day},
		{"just under a third left", 60*day + time.Second, DefaultRotationFraction, true, 30*day - time.Second},
		{"day 89", 89 * day, DefaultRotationFraction, true, day},
		{"expired", 91 * day, DefaultRotationFraction, true, -day},
		{"at NotAfter", 90 * day, DefaultRotationFraction, true, 0},
		{"half fraction day 44", 44 * day, 0.5, false, 46 * day},
		{"half fraction day 46", 46 * day, 0.5, true, 44 * day},
		{"zero fraction only when expired", 89 * day, 0, false, day},
		{"zero fraction expired", 90*day + time.Second, 0, true, -time.Second},
		{"NaN fraction", 89 * day, math.NaN(), false, day},
		{"fraction 1 always", 0, 1, true, 90 * day},
		{"before NotBefore", -time.Hour, DefaultRotationFraction, false, 90*day + time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := start.Add(tc.at)
			if got := NeedsRotation(cert, now, tc.fraction); got != tc.want {
				t.Errorf("NeedsRotation at +%s with %v = %v, want %v", tc.at, tc.fraction, got, tc.want)
			}
			if got := RemainingLife(cert, now); got != tc.remaining {
				t.Errorf("RemainingLife at +%s = %s, want %s", tc.at, got, tc.remaining)
			}
		})
	}
	if !NeedsRotation(nil, start, DefaultRotationFraction) {
		t.Error("NeedsRotation(nil) = false, want true")
	}
	if RemainingLife(nil, start) != 0 {
		t.Error("RemainingLife(nil) != 0")
	}
}

// An issued certificate goes through the same thresholds as the clock
// advances.
func TestIssuedCertificateExpiryWithFakeClock(t *testing.T) {
	ks, _, clk := newKeystore(t)
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	kp := mustIssue(t, ca, CertRequest{CommonName: "kubelet", Usage: UsageClient, Validity: 30 * 24 * time.Hour})
	if NeedsRotation(kp.Cert, clk.Now(), DefaultRotationFraction) {
		t.Fatal("a fresh certificate needs rotation")
	}
	clk.Advance(19 * 24 * time.Hour)
	if NeedsRotation(kp.Cert, clk.Now(), DefaultRotationFraction) {
		t.Errorf("needs rotation after 19 of 30 days (remaining %s)", RemainingLife(kp.Cert, clk.Now()))
	}
	clk.Advance(24 * time.Hour)
	if !NeedsRotation(kp.Cert, clk.Now(), DefaultRotationFraction) {
		t.Errorf("no rotation after 20 of 30 days (remaining %s)", RemainingLife(kp.Cert, clk.Now()))
	}
}
