package logging

import (
	"bytes"
	"encoding/json"
	"flag"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, Options{Format: "json", Level: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "volume", "/dev/loop3")
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &rec); err != nil {
		t.Fatalf("output is not one JSON record: %v\n%s", err, buf.String())
	}
	if rec["msg"] != "shown" || rec["volume"] != "/dev/loop3" {
		t.Fatalf("record = %v", rec)
	}
}

func TestJournaldOmitsTime(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "8:1234")
	var buf bytes.Buffer
	l, err := New(&buf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hello")
	if strings.Contains(buf.String(), "time=") || !strings.Contains(buf.String(), "msg=hello") {
		t.Fatalf("journald output = %q, want no time and the message", buf.String())
	}
}

func TestValidateNamesFlag(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Level: "loud"}, `--log-level: "loud"`},
		{Options{Format: "xml"}, `--log-format: "xml"`},
	} {
		if err := c.o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c.o, err, c.want)
		}
	}
}

func TestAddFlags(t *testing.T) {
	var o Options
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	o.AddFlags(fs)
	if o.Format != "text" || o.Level != "info" {
		t.Fatalf("defaults = %+v, want text and info", o)
	}
	if err := fs.Parse([]string{"--log-format", "json", "--log-level", "debug"}); err != nil {
		t.Fatal(err)
	}
	if o.Format != "json" || o.Level != "debug" {
		t.Fatalf("after parsing = %+v", o)
	}
}

// Args is the inverse of AddFlags, from the default options.
func TestOptionsArgsRoundTrip(t *testing.T) {
	for _, want := range []Options{DefaultOptions(), {Format: "json", Level: "debug"}, {Format: "text", Level: "error"}} {
		got := DefaultOptions()
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		got.AddFlags(fs)
		if err := fs.Parse(want.Args()); err != nil {
			t.Fatalf("%q: %v", want.Args(), err)
		}
		if got != want {
			t.Errorf("%q parsed to %+v, want %+v", want.Args(), got, want)
		}
	}
	if a := DefaultOptions().Args(); a != nil {
		t.Errorf("defaults render %q", a)
	}
}
