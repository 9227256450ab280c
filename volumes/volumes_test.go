package volumes

import (
	"errors"
	"strings"
	"testing"
)

func TestSelectorLabelFitsExt4AndDiffersPerSlot(t *testing.T) {
	base := Selector{Cluster: "a-very-long-cluster-name.example.com", EtcdCluster: "main", Slot: "main-1"}
	seen := map[string]Selector{}
	for _, s := range []Selector{
		base,
		{Cluster: base.Cluster, EtcdCluster: "events", Slot: "main-1"},
		{Cluster: base.Cluster, EtcdCluster: "main", Slot: "main-2"},
		{Cluster: "other.example.com", EtcdCluster: "main", Slot: "main-1"},
		// the separator keeps field boundaries: these must differ
		{Cluster: "ab", EtcdCluster: "c", Slot: "d"},
		{Cluster: "a", EtcdCluster: "bc", Slot: "d"},
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
	err := Selector{Cluster: "", EtcdCluster: "main/x", Slot: "main-1"}.Validate()
	if err == nil {
		t.Fatal("invalid selector accepted")
	}
	for _, f := range []string{"cluster", "etcdCluster"} {
		if !strings.Contains(err.Error(), "volume selector "+f+":") {
			t.Errorf("error %q does not name field %s", err, f)
		}
	}
	if strings.Contains(err.Error(), "slot") {
		t.Errorf("error %q names the valid field slot", err)
	}
	// A slot is etcd-manager's identity: a DNS label.
	for _, bad := range []string{"", "Main-1", "main_1", "-main", strings.Repeat("a", 64)} {
		if err := (Selector{Cluster: "c", EtcdCluster: "main", Slot: bad}).Validate(); err == nil || !strings.Contains(err.Error(), "volume selector slot:") {
			t.Errorf("slot %q: %v, want an error naming slot", bad, err)
		}
	}
	if err := (Selector{Cluster: "c.k8s.local", EtcdCluster: "main", Slot: "main-1"}).Validate(); err != nil {
		t.Errorf("valid selector refused: %v", err)
	}
}

func TestIdentityRoundTripAndStrictParse(t *testing.T) {
	sel := Selector{Cluster: "c.k8s.local", EtcdCluster: "main", Slot: "main-1"}
	id := NewIdentity(sel, "2026-01-02T03:04:05Z", "/dev/sdb")
	got, err := ParseIdentity("test", id.Marshal())
	if err != nil || got != id {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, id)
	}
	bad := map[string]string{
		"unknown field":                  `{"apiVersion":"volumes.kopsnode.io/v1","kind":"VolumeIdentity","cluster":"c","etcdCluster":"main","slot":"main-1","extra":1}`,
		"wrong kind":                     `{"apiVersion":"volumes.kopsnode.io/v1","kind":"Other","cluster":"c","etcdCluster":"main","slot":"main-1"}`,
		"empty slot":                     `{"apiVersion":"volumes.kopsnode.io/v1","kind":"VolumeIdentity","cluster":"c","etcdCluster":"main","slot":""}`,
		"member, no slot (before slots)": `{"apiVersion":"volumes.kopsnode.io/v1","kind":"VolumeIdentity","cluster":"c","etcdCluster":"main","member":"host-a"}`,
		"not json":                       "\x00\xff",
		"empty":                          "",
	}
	for name, in := range bad {
		if _, err := ParseIdentity("/dev/x:/"+IdentityFileName, []byte(in)); err == nil || !strings.Contains(err.Error(), "/dev/x:/"+IdentityFileName) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
}

func TestSlotNames(t *testing.T) {
	got := SlotNames("events", 3)
	if strings.Join(got, ",") != "events-1,events-2,events-3" {
		t.Fatalf("SlotNames = %v", got)
	}
	for _, s := range got {
		if err := (Selector{Cluster: "c", EtcdCluster: "events", Slot: s}).Validate(); err != nil {
			t.Errorf("slot %s: %v", s, err)
		}
	}
}

func TestMatchesNamesBothIdentities(t *testing.T) {
	a := Selector{Cluster: "c", EtcdCluster: "main", Slot: "main-1"}
	b := Selector{Cluster: "c", EtcdCluster: "main", Slot: "main-2"}
	if err := matches("/dev/sdb", NewIdentity(a, "", ""), a); err != nil {
		t.Fatal(err)
	}
	err := matches("/dev/sdb", NewIdentity(a, "", ""), b)
	if !errors.Is(err, ErrWrongIdentity) || !strings.Contains(err.Error(), a.String()) || !strings.Contains(err.Error(), b.String()) || !strings.Contains(err.Error(), "/dev/sdb") {
		t.Fatalf("%v: want ErrWrongIdentity naming the device and both identities", err)
	}
}
