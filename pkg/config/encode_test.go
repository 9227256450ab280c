package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestMarshalRoundTrip(t *testing.T) {
	for _, path := range exampleFiles(t) {
		t.Run(path, func(t *testing.T) {
			data, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := Decode(data, path)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := Parse(data, path)
			if err != nil {
				t.Fatal(err)
			}
			for _, doc := range []any{decoded, parsed} {
				out, err := Marshal(doc)
				if err != nil {
					t.Fatal(err)
				}
				again, err := Decode(out, "marshalled")
				if err != nil {
					t.Fatalf("re-decoding:\n%s\n%v", out, err)
				}
				if !reflect.DeepEqual(doc, again) {
					t.Errorf("round trip changed the document:\n%#v\n%#v", doc, again)
				}
				h1, _ := Hash(doc)
				h2, _ := Hash(again)
				if h1 != h2 {
					t.Errorf("round trip changed the hash")
				}
			}
		})
	}
}

func TestMarshalQuotesAmbiguousStrings(t *testing.T) {
	n := &NodeConfig{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindNodeConfig}}
	n.Metadata.Name = "nodes"
	n.Spec.KubernetesVersion = "1.30"
	n.Spec.Sysctls = map[string]string{"a.b": "true", "c.d": "null", "e.f": "0x10", "g.h": "line\nbreak"}
	out, err := Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeNodeConfig(out, "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(n, back) {
		t.Errorf("round trip:\n%s\n%#v", out, back.Spec)
	}
	if !strings.HasPrefix(string(out), "apiVersion: agents.kopsnode.io/v1alpha1\nkind: NodeConfig\n") {
		t.Errorf("output does not start with apiVersion and kind:\n%s", out)
	}
}

func TestMarshalRejectsOtherTypes(t *testing.T) {
	for _, bad := range []any{nil, "x", Cluster{}, (*NodeConfig)(nil)} {
		if _, err := Marshal(bad); err == nil {
			t.Errorf("Marshal(%#v) succeeded", bad)
		}
	}
}
