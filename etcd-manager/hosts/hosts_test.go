package hosts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUpdateKeepsOtherLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	orig := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
	if err := os.WriteFile(p, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	recs := []Record{{"etcd-b.internal.c", "10.0.0.2"}, {"etcd-a.internal.c", "10.0.0.1"}}
	changed, err := Update(p, "etcd-manager main", recs)
	if err != nil || !changed {
		t.Fatalf("Update = %v, %v", changed, err)
	}
	b, _ := os.ReadFile(p)
	want := orig + "# Begin etcd-manager main (managed; do not edit)\n10.0.0.1\tetcd-a.internal.c\n10.0.0.2\tetcd-b.internal.c\n# End etcd-manager main\n"
	if string(b) != want {
		t.Fatalf("hosts file:\n%s\nwant:\n%s", b, want)
	}
	// Same records: no write.
	if changed, err := Update(p, "etcd-manager main", recs); err != nil || changed {
		t.Fatalf("second Update = %v, %v", changed, err)
	}
	// A line added by someone else after the block survives; the block is
	// replaced in place.
	if err := os.WriteFile(p, []byte(string(b)+"192.168.1.1 printer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Update(p, "etcd-manager main", recs[:1]); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(p)
	if !strings.Contains(string(b), "192.168.1.1 printer") || strings.Contains(string(b), "10.0.0.1") || !strings.HasPrefix(string(b), orig) {
		t.Fatalf("hosts file after update:\n%s", b)
	}
	// A second owner has its own block.
	if _, err := Update(p, "etcd-manager events", []Record{{"etcd-x.internal.c", "10.0.0.9"}}); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(p)
	if !strings.Contains(string(b), "etcd-b.internal.c") || !strings.Contains(string(b), "etcd-x.internal.c") {
		t.Fatalf("two owners:\n%s", b)
	}
	// No records: the block goes away.
	if _, err := Update(p, "etcd-manager main", nil); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(p)
	if strings.Contains(string(b), "etcd-manager main") {
		t.Fatalf("empty block left:\n%s", b)
	}
}

func TestUpdateRejectsBadInput(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	if _, err := Update(p, "o", []Record{{"a b", "10.0.0.1"}, {"ok", "not-an-ip"}}); err == nil || !strings.Contains(err.Error(), "records[0].name") || !strings.Contains(err.Error(), "records[1].ip") {
		t.Fatalf("Update with bad records = %v", err)
	}
	broken := "# Begin o (managed; do not edit)\n10.0.0.1 x\n"
	if err := os.WriteFile(p, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Update(p, "o", nil); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Update of a block without end = %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != broken {
		t.Fatalf("broken file was changed: %q", b)
	}
}

// FuzzRender: any file content either fails cleanly or renders to a file
// that renders to itself again (idempotent), keeps every line outside the
// block, and holds the block exactly once.
func FuzzRender(f *testing.F) {
	f.Add("127.0.0.1 localhost\n")
	f.Add("# Begin o (managed; do not edit)\n1.2.3.4 a\n# End o\nx y\n")
	f.Add("no newline at end")
	f.Add("# Begin o (managed; do not edit)\n")
	f.Fuzz(func(t *testing.T, content string) {
		recs := []Record{{"etcd-a.internal.c", "10.0.0.1"}}
		out, err := Render([]byte(content), "o", recs)
		if err != nil {
			return
		}
		again, err := Render(out, "o", recs)
		if err != nil || string(again) != string(out) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", content, out, again, err)
		}
		begin, end := markers("o")
		n := 0
		for _, l := range strings.Split(string(out), "\n") {
			if strings.TrimRight(l, "\r") == begin {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d blocks in %q", n, out)
		}
		inBlock := false
		for _, l := range strings.Split(content, "\n") {
			switch {
			case strings.TrimRight(l, "\r") == begin:
				inBlock = true
			case inBlock && strings.TrimRight(l, "\r") == end:
				inBlock = false
			case !inBlock && l != "":
				if !strings.Contains(string(out), l) {
					t.Fatalf("line %q lost: %q -> %q", l, content, out)
				}
			}
		}
	})
}
