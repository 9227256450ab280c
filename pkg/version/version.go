// Package version reports the build's version, set at link time by the Makefile.
package version

import "runtime"

// These are set with -ldflags "-X ..." by the Makefile; they are not changed
// at run time.
var (
	Version   = "dev"
	GitCommit = "unknown"
)

// Info is the version report printed by every binary's `version` command.
type Info struct {
	Binary    string `json:"binary"`
	Version   string `json:"version"`
	GitCommit string `json:"gitCommit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the version report for the named binary.
func Get(binary string) Info {
	return Info{
		Binary:    binary,
		Version:   Version,
		GitCommit: GitCommit,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
}
