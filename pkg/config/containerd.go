package config

import (
	"fmt"
	"regexp"
	"strconv"
)

var containerdVersionRE = regexp.MustCompile(`^v?([0-9]+)\.([0-9]+)(\.[0-9]+)?([-+][0-9A-Za-z.+-]*)?$`)

// ContainerdMajor returns the major version of a containerd version string
// ("2.4.2" or "v1.7.27"), which selects the schema of containerd's
// configuration file. An empty version means the current major, 2. Only
// majors 1 and 2 are known.
func ContainerdMajor(version string) (int, error) {
	if version == "" {
		return 2, nil
	}
	m := containerdVersionRE.FindStringSubmatch(version)
	if m == nil {
		return 0, fmt.Errorf("%q is not a containerd version (for example 2.4.2)", version)
	}
	major, err := strconv.Atoi(m[1])
	if err != nil || major < 1 || major > 2 {
		return 0, fmt.Errorf("containerd %s is not supported (majors 1 and 2 are)", version)
	}
	return major, nil
}
