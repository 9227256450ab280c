package config

import (
	"path/filepath"
	"testing"
)

func BenchmarkParseNodeConfig(b *testing.B) {
	data, err := ReadFile(filepath.Join(examplesDir, "nodeup", "control-plane.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseNodeConfig(data, "control-plane.yaml"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHash(b *testing.B) {
	n, err := LoadNodeConfigFile(filepath.Join(examplesDir, "nodeup", "control-plane.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Hash(n); err != nil {
			b.Fatal(err)
		}
	}
}
