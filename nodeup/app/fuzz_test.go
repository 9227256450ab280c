package app

import "testing"

func FuzzParseBootConfig(f *testing.F) {
	f.Add("store: file:///x\ncluster: c\ngroup: g\n")
	f.Add("store: [1, 2]\n")
	f.Add("bogus: 1\n")
	f.Fuzz(func(t *testing.T, s string) {
		bc, err := ParseBootConfig([]byte(s), "boot.yaml")
		if err == nil {
			_ = bc.Validate()
		}
	})
}
