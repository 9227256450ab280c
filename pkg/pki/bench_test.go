package pki

import (
	"log/slog"
	"testing"
	"time"
)

// BenchmarkIssue reports how many leaf certificates per second a CA issues,
// by key type (key generation dominates).
func BenchmarkIssue(b *testing.B) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyRSA2048} {
		b.Run(string(kt), func(b *testing.B) {
			cert, key, err := newSelfSignedCA("bench-ca", CAOptions{KeyType: kt}, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			ca := &CA{name: "bench-ca", cert: cert, key: key, clock: time.Now, logger: slog.New(slog.DiscardHandler)}
			req := CertRequest{CommonName: "bench", Usage: UsagePeer, DNSNames: []string{"bench.internal"}, KeyType: kt}
			start := time.Now()
			for b.Loop() {
				if _, err := ca.Issue(req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
		})
	}
}
