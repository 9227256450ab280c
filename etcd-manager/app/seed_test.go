package app

import (
	"strings"
	"testing"
)

func TestSeedSpecFlags(t *testing.T) {
	if s, err := seedSpec(0, ""); s != nil || err != nil {
		t.Fatalf("no seed flags: %v, %v", s, err)
	}
	if s, err := seedSpec(3, "3.6.16"); err != nil || s.MemberCount != 3 || s.EtcdVersion != "3.6.16" {
		t.Fatalf("seed: %+v, %v", s, err)
	}
	for _, c := range []struct {
		members int
		version string
		want    string
	}{
		{3, "", "go together"},
		{0, "3.6.16", "go together"},
		{2, "3.6.16", "memberCount: 2"},
		{3, "3.4.23", `"3.4.23" is not a supported etcd version`},
	} {
		if _, err := seedSpec(c.members, c.version); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("seedSpec(%d, %q) = %v, want an error containing %q", c.members, c.version, err, c.want)
		}
	}
}
