// Command ociimage packs a few files into a single-layer OCI image and writes
// it as an OCI image-layout tarball that `ctr images import` accepts, named
// by the annotations io.containerd.image.name and
// org.opencontainers.image.ref.name. The output is deterministic (fixed
// times, sorted entries), so the same inputs give the same sha256.
//
//	ociimage --name registry.k8s.io/pause:3.10.1 --out pause.tar \
//	    --entrypoint /pause --file bin/pause=/pause
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// fileFlag collects repeated --file SRC=DST.
type fileFlag []File

func (f *fileFlag) String() string { return fmt.Sprint(*f) }

func (f *fileFlag) Set(v string) error {
	src, dst, ok := strings.Cut(v, "=")
	if !ok || src == "" || dst == "" {
		return fmt.Errorf("want SRC=DST, got %q", v)
	}
	*f = append(*f, File{Src: src, Dst: dst})
	return nil
}

func main() {
	var opts Options
	var files fileFlag
	flag.StringVar(&opts.Name, "name", "", "image reference, e.g. registry.k8s.io/pause:3.10.1")
	out := flag.String("out", "", "output tarball")
	entrypoint := flag.String("entrypoint", "", "path of the entrypoint inside the image")
	flag.StringVar(&opts.Arch, "arch", runtime.GOARCH, "image architecture")
	flag.Var(&files, "file", "SRC=DST: host file SRC at DST in the image (repeated)")
	flag.Parse()
	opts.Files = files
	if *entrypoint != "" {
		opts.Entrypoint = []string{*entrypoint}
	}
	if err := run(opts, *out); err != nil {
		slog.Error("ociimage", "err", err)
		os.Exit(1)
	}
}

// run writes the tarball next to out and renames it into place, so a
// half-written image is never left at out.
func run(opts Options, out string) error {
	if out == "" {
		return errors.New("--out is required")
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := Write(tmp, opts); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	slog.Info("wrote image", "name", opts.Name, "out", out)
	return nil
}
