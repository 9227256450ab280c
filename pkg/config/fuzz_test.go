package config

import (
	"errors"
	"os"
	"reflect"
	"testing"
)

func FuzzDecode(f *testing.F) {
	for _, path := range append(exampleFiles(f), badFiles(f)...) {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{"", "~", "[]", "{}", "a: *b", "&a [*a]", minimalNode, hashBase, hashBaseReformatted,
		"apiVersion: agents.kopsnode.io/v1alpha1\nkind: Cluster\nspec: &s {gossip: *s}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Parsing (with validation errors placed in the file) must not
		// panic, whatever the input.
		_, _ = Parse(data, "fuzz.yaml")
		doc, err := Decode(data, "fuzz.yaml")
		if err != nil {
			var es *Errors
			if !errors.As(err, &es) || len(*es) == 0 || err.Error() == "" {
				t.Fatalf("error %v (%T) is not a non-empty *config.Errors", err, err)
			}
			for _, fe := range *es {
				if fe.Source != "fuzz.yaml" || fe.Msg == "" {
					t.Fatalf("malformed FieldError %#v", fe)
				}
			}
			return
		}
		out, err := Marshal(doc)
		if err != nil {
			t.Fatalf("Marshal of a decoded document: %v", err)
		}
		again, err := Decode(out, "marshalled")
		if err != nil {
			t.Fatalf("re-decoding marshalled document:\n%s\n%v", out, err)
		}
		if !reflect.DeepEqual(doc, again) {
			t.Fatalf("round trip changed the document:\n%#v\n%#v\n%s", doc, again, out)
		}
		h1, err := Hash(doc)
		if err != nil {
			t.Fatalf("Hash: %v", err)
		}
		if h2, _ := Hash(again); h1 != h2 {
			t.Fatalf("round trip changed the hash")
		}
		// Defaulting and validating any decodable document must not panic.
		SetDefaults(doc)
		_ = Validate(doc)
	})
}
