package volumes

import (
	"errors"
	"strings"
	"testing"
)

func TestSelectorLabelFitsExt4AndDiffersPerMember(t *testing.T) {
	base := Selector{Cluster: "a-very-long-cluster-name.example.com", EtcdCluster: "main", Member: "etcd-a"}
	seen := map[string]Selector{}
	for _, s := range []Selector{
		base,
		{Cluster: base.Cluster, EtcdCluster: "events", Member: "etcd-a"},
		{Cluster: base.Cluster, EtcdCluster: "main", Member: "etcd-b"},
		{Cluster: "other.example.com", EtcdCluster: "main", Member: "etcd-a"},
		// the separator keeps field boundaries: these must differ
		{Cluster: "ab", EtcdCluster: "c", Member: "d"},
		{Cluster: "a", EtcdCluster: "bc", Member: "d"},
	} {
		l := s.Label()
		if len(l) > 16 || !strings.HasPrefix(l, LabelPrefix) {
			t.Errorf("label %q of %s: want at most 16 bytes starting %q", l, s, LabelPrefix)
		}
		if o, ok := seen[l]; ok {
			t.Errorf("%s and %s share label %s", s, o, l)
		}
		seen[l] = s
		if s.Label() != l {
			t.Errorf("label of %s is not stable", s)
		}
	}
}

func TestSelectorValidateNamesFields(t *testing.T) {
	err := Selector{Cluster: "", EtcdCluster: "main/x", Member: "ok"}.Validate()
	if err == nil {
		t.Fatal("invalid selector accepted")
	}
	for _, f := range []string{"cluster", "etcdCluster"} {
		if !strings.Contains(err.Error(), "volume selector "+f+":") {
			t.Errorf("error %q does not name field %s", err, f)
		}
	}
	if strings.Contains(err.Error(), "member") {
		t.Errorf("error %q names the valid field member", err)
	}
	if err := (Selector{Cluster: "c.k8s.local", EtcdCluster: "main", Member: "etcd-a"}).Validate(); err != nil {
		t.Errorf("valid selector refused: %v", err)
	}
}

func TestIdentityRoundTripAndStrictParse(t *testing.T) {
	sel := Selector{Cluster: "c.k8s.local", EtcdCluster: "main", Member: "etcd-a"}
	id := NewIdentity(sel, "2026-01-02T03:04:05Z", "/dev/sdb")
	got, err := ParseIdentity("test", id.Marshal())
	if err != nil || got != id {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, id)
	}
	bad := map[string]string{
		"unknown field": `{"apiVersion":"volumes.kopsnode.io/v1","kind":"VolumeIdentity","cluster":"c","etcdCluster":"main","member":"a","extra":1}`,
		"wrong kind":    `{"apiVersion":"volumes.kopsnode.io/v1","kind":"Other","cluster":"c","etcdCluster":"main","member":"a"}`,
		"empty member":  `{"apiVersion":"volumes.kopsnode.io/v1","kind":"VolumeIdentity","cluster":"c","etcdCluster":"main","member":""}`,
		"not json":      "\x00\xff",
		"empty":         "",
	}
	for name, in := range bad {
		if _, err := ParseIdentity("/dev/x:/"+IdentityFileName, []byte(in)); err == nil || !strings.Contains(err.Error(), "/dev/x:/"+IdentityFileName) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
}

func TestMatchesNamesBothIdentities(t *testing.T) {
	a := Selector{Cluster: "c", EtcdCluster: "main", Member: "a"}
	b := Selector{Cluster: "c", EtcdCluster: "main", Member: "b"}
	if err := matches("/dev/sdb", NewIdentity(a, "", ""), a); err != nil {
		t.Fatal(err)
	}
	err := matches("/dev/sdb", NewIdentity(a, "", ""), b)
	if !errors.Is(err, ErrWrongIdentity) || !strings.Contains(err.Error(), a.String()) || !strings.Contains(err.Error(), b.String()) || !strings.Contains(err.Error(), "/dev/sdb") {
		t.Fatalf("%v: want ErrWrongIdentity naming the device and both identities", err)
	}
}
