package textdiff

import "testing"

func TestUnified(t *testing.T) {
	for _, c := range []struct{ name, a, b, want string }{
		{"change", "a\nb\nc\n", "a\nB\nc\n", "--- f\n+++ f (wanted)\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"},
		{"new file", "", "x\ny\n", "--- f\n+++ f (wanted)\n@@ -0,0 +1,2 @@\n+x\n+y\n"},
		{"same", "a\n", "a\n", "--- f\n+++ f (wanted)\n"},
		{"binary", "a\x00", "b", "binary content differs (2 -> 1 bytes)\n"},
	} {
		if got := Unified("f", []byte(c.a), []byte(c.b)); got != c.want {
			t.Errorf("%s: got\n%s\nwant\n%s", c.name, got, c.want)
		}
	}
}
