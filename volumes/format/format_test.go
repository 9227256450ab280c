package format_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/volumes/format"
	"github.com/kopsnode/agents/volumes/internal/looptest"
)

const size = 16 << 20

func TestFormatBlankDeviceWritesLabelAndFiles(t *testing.T) {
	testtools.RequireRoot(t)
	ctx := context.Background()
	dev, _ := looptest.Device(t, size)
	rep, err := format.Inspect(ctx, dev)
	if err != nil || !rep.Blank() || rep.Size != size {
		t.Fatalf("fresh device: %+v %v, want blank of %d bytes", rep, err, size)
	}
	files := map[string][]byte{"id.json": []byte(`{"x":1}` + "\n")}
	if err := format.Format(ctx, dev, format.Options{Label: "kn-etcd-test", Files: files}); err != nil {
		t.Fatal(err)
	}
	got, err := format.ReadFile(ctx, dev, "id.json")
	if err != nil || string(got) != string(files["id.json"]) {
		t.Fatalf("ReadFile: %q %v", got, err)
	}
	if _, err := format.ReadFile(ctx, dev, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v, want fs.ErrNotExist", err)
	}
	rep, err = format.Inspect(ctx, dev)
	if err != nil || rep.Blank() || rep.Type() != "ext4" || rep.Signatures["LABEL"] != "kn-etcd-test" {
		t.Fatalf("after format: %+v %v", rep, err)
	}
}

func TestFormatRefusesFormattedDeviceUntouched(t *testing.T) {
	testtools.RequireRoot(t)
	ctx := context.Background()
	dev, _ := looptest.Device(t, size)
	looptest.Run(t, "mkfs.ext4", "-q", "-L", "precious", dev)
	before := looptest.Sum(t, dev, 0, size)
	err := format.Format(ctx, dev, format.Options{Label: "kn-etcd-x"})
	if !errors.Is(err, format.ErrNotBlank) || !strings.Contains(err.Error(), dev) || !strings.Contains(err.Error(), "LABEL=precious") {
		t.Fatalf("Format of an ext4 device: %v, want ErrNotBlank naming %s and its label", err, dev)
	}
	if looptest.Sum(t, dev, 0, size) != before {
		t.Fatal("device changed")
	}
}

func TestFormatRejectsBadOptions(t *testing.T) {
	testtools.RequireRoot(t)
	dev, _ := looptest.Device(t, size)
	for name, opts := range map[string]format.Options{
		"long label": {Label: "seventeen-chars-x"},
		"path file":  {Label: "x", Files: map[string][]byte{"a/b": nil}},
		"dotdot":     {Label: "x", Files: map[string][]byte{"..": nil}},
	} {
		if err := format.Format(context.Background(), dev, opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if rep, err := format.Inspect(context.Background(), dev); err != nil || !rep.Blank() {
		t.Fatalf("device written by a refused Format: %+v %v", rep, err)
	}
}

func TestInspectRefusesMissingDevice(t *testing.T) {
	p := t.TempDir() + "/nope"
	if _, err := format.Inspect(context.Background(), p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Inspect of a missing device: %v", err)
	}
	if _, err := os.Stat(p); err == nil {
		t.Fatal("created")
	}
}
