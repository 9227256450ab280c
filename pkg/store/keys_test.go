package store

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"a", "c/cluster.yaml", "c/pki/ca/ca.key", "backups/etcd/main/2026-01-01T00:00:00Z/etcd.db", "a.b-c_d"} {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", "/a", "a/", "a//b", "./a", "a/.", "a/../b", "..", "a\\b", "a\nb", "a\x00b", "a\x7fb"} {
		err := ValidateKey(k)
		if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), strings.Trim(strconv.Quote(k), `"`)) {
			t.Errorf("ValidateKey(%q) = %v; want an invalid-key error naming the key", k, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"", "c/", "c", "c/nodeup/n"} {
		if err := ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"/", "/c", "../", "a//", "a/../"} {
		if err := ValidatePrefix(p); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidatePrefix(%q) = %v; want invalid", p, err)
		}
	}
}

func TestJoinURL(t *testing.T) {
	for _, c := range [][3]string{
		{"s3://b/p", "k", "s3://b/p/k"},
		{"s3://b", "", "s3://b"},
		{"file:///x/", "k", "file:///x/k"},
	} {
		if got := JoinURL(c[0], c[1]); got != c[2] {
			t.Errorf("JoinURL(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}
