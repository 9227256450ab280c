package tasks

import (
	"strings"
	"testing"
)

func FuzzSpliceBlock(f *testing.F) {
	f.Add("127.0.0.1 localhost\n", "10.0.0.1 a\n")
	f.Add("# BEGIN nodeup x\nold\n# END nodeup x\ntail", "")
	f.Add("# END nodeup x\n# BEGIN nodeup x\n", "y")
	f.Fuzz(func(t *testing.T, old, content string) {
		b, e := "# BEGIN nodeup x", "# END nodeup x"
		out, err := SpliceBlock(old, b, e, content)
		if err != nil {
			return
		}
		// Idempotent: splicing again changes nothing.
		again, err := SpliceBlock(out, b, e, content)
		if err != nil || again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", old, out, again, err)
		}
		if !strings.Contains(out, b+"\n") {
			t.Fatalf("no block in %q", out)
		}
	})
}

func FuzzUnifiedDiff(f *testing.F) {
	f.Add("a\nb\n", "a\nc\n")
	f.Fuzz(func(t *testing.T, a, b string) {
		if len(a) > 4096 || len(b) > 4096 {
			return
		}
		_ = unifiedDiff("/f", []byte(a), []byte(b))
	})
}
