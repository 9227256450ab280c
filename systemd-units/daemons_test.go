package units

import (
	"reflect"
	"strings"
	"testing"
)

// The daemons' units carry their arguments exactly: a store URL with a
// percent escape, a value with a space or a dollar sign reach the program
// as rendered (systemd would expand % and $ and split on spaces).
func TestDaemonUnitsQuoteArguments(t *testing.T) {
	args := []string{"run", "--store=s3://bucket/a%20b", "--publish=x y", "--zone=$HOME"}
	for _, u := range []Unit{Protokube(args), ProtokubeEtcdVolumes(args), EtcdManager("main", args), ProtokubeManifests(args)} {
		var line string
		for _, l := range strings.Split(u.Render(), "\n") {
			if rest, ok := strings.CutPrefix(l, "ExecStart="); ok {
				line = rest
			}
		}
		got := SplitExecLine(line)
		if len(got) == 0 || !reflect.DeepEqual(got[1:], args) {
			t.Errorf("%s: ExecStart=%s reads back as %q, want %q", u.Name, line, got, args)
		}
		if !strings.Contains(line, "a%%20b") || !strings.Contains(line, "$$HOME") {
			t.Errorf("%s: ExecStart=%s does not escape %% and $", u.Name, line)
		}
	}
}
