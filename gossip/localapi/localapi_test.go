package localapi

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestValidateKey(t *testing.T) {
	for key, want := range map[string]string{
		"agents/etcd-manager/main/main-1": "",
		"agents/":                         `must start with "agents/"`,
		"dns/api.":                        `must start with "agents/"`,
		"agents/a//b":                     "empty path segment",
		"agents/a/":                       "empty path segment",
	} {
		err := ValidateKey(key)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("ValidateKey(%q) = %v, want %q", key, err, want)
		}
	}
}

// A daemon that does not answer is an error naming its address and flag.
func TestClientNamesTheDaemon(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Client{Addr: "127.0.0.1:1"}.List(ctx, "agents/")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "--status-listen") {
		t.Fatalf("%v", err)
	}
}
