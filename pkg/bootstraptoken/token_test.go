package bootstraptoken

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"abcdef.0123456789abcdef", true},
		{" abcdef.0123456789abcdef\n", true},
		{"ABCDEF.0123456789abcdef", false},
		{"abcde.0123456789abcdef", false},
		{"abcdef.0123456789abcde", false},
		{"abcdef0123456789abcdef", false},
		{"", false},
	} {
		tok, err := Parse(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Parse(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if tc.ok && tok.String() != strings.TrimSpace(tc.in) {
			t.Errorf("Parse(%q).String() = %q", tc.in, tok.String())
		}
	}
}

func TestGenerateParses(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(tok.String()); err != nil {
			t.Fatalf("generated %q does not parse: %v", tok, err)
		}
		if seen[tok.ID] {
			t.Fatalf("id %s generated twice", tok.ID)
		}
		seen[tok.ID] = true
	}
}

func TestLogValueHidesSecret(t *testing.T) {
	tok := Token{ID: "abcdef", Secret: "0123456789abcdef"}
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "token", tok)
	if strings.Contains(b.String(), tok.Secret) || !strings.Contains(b.String(), "abcdef.REDACTED") {
		t.Fatalf("log line %q", b.String())
	}
}

func newStore(t *testing.T) store.Store {
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestEnsureConcurrentCreatorsAgree(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if _, err := Read(ctx, st, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Read before Ensure: %v, want not found", err)
	}
	var wg sync.WaitGroup
	toks := make([]Token, 8)
	created := make([]bool, 8)
	errs := make([]error, 8)
	for i := range toks {
		wg.Go(func() { toks[i], created[i], errs[i] = Ensure(ctx, st, "c1") })
	}
	wg.Wait()
	n := 0
	for i := range toks {
		if errs[i] != nil {
			t.Fatalf("Ensure %d: %v", i, errs[i])
		}
		if toks[i] != toks[0] {
			t.Fatalf("Ensure %d returned %v, Ensure 0 %v", i, toks[i], toks[0])
		}
		if created[i] {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d callers say they created the token, want 1", n)
	}
	got, err := Read(ctx, st, "c1")
	if err != nil || got != toks[0] {
		t.Fatalf("Read = %v, %v; want %v", got, err, toks[0])
	}
}

func TestReadCorruptNamesURL(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if _, err := st.Put(ctx, Key("c1"), strings.NewReader("not a token"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	_, err := Read(ctx, st, "c1")
	if err == nil || !strings.Contains(err.Error(), "c1/secrets/node-bootstrap-token") {
		t.Fatalf("Read of a corrupt token: %v", err)
	}
	if _, _, err := Ensure(ctx, st, "c1"); err == nil {
		t.Fatal("Ensure over a corrupt token succeeded; it must not overwrite it")
	}
}
