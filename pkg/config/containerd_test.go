package config

import "testing"

func TestContainerdMajor(t *testing.T) {
	for _, c := range []struct {
		in    string
		major int
		bad   bool
	}{
		{"", 2, false},
		{"2.4.2", 2, false},
		{"v1.7.27", 1, false},
		{"2.1", 2, false},
		{"2.0.0-rc.1", 2, false},
		{"3.0.0", 0, true},
		{"0.9.0", 0, true},
		{"latest", 0, true},
		{"2.4.2\n", 0, true},
	} {
		got, err := ContainerdMajor(c.in)
		if (err != nil) != c.bad || got != c.major {
			t.Errorf("ContainerdMajor(%q) = %d, %v; want %d, error %t", c.in, got, err, c.major, c.bad)
		}
	}
}
