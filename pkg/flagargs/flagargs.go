// Package flagargs renders a daemon's typed run configuration back into the
// command-line flags its AddFlags binds: the Args half of the contract
// between nodeup, which writes a unit's ExecStart, and the daemon, which
// parses it. Values equal to their default are left out, so a unit names
// only what the configuration chose.
package flagargs

import (
	"flag"
	"sort"
	"strconv"
	"time"
)

// Builder collects "--name=value" arguments in the order they are added.
// The zero value is ready to use.
type Builder struct {
	args []string
}

// Args returns the arguments collected so far (nil when none).
func (b *Builder) Args() []string { return b.args }

// Raw appends arguments rendered elsewhere (another struct's Args).
func (b *Builder) Raw(args ...string) { b.args = append(b.args, args...) }

// String renders --name=v unless v equals def.
func (b *Builder) String(name, v, def string) {
	if v != def {
		b.args = append(b.args, "--"+name+"="+v)
	}
}

// Always renders --name=v whatever its value (a required flag).
func (b *Builder) Always(name, v string) {
	b.args = append(b.args, "--"+name+"="+v)
}

// Bool renders --name (or --name=false) unless v equals def.
func (b *Builder) Bool(name string, v, def bool) {
	switch {
	case v == def:
	case v:
		b.args = append(b.args, "--"+name)
	default:
		b.args = append(b.args, "--"+name+"=false")
	}
}

// Int renders --name=v unless v equals def.
func (b *Builder) Int(name string, v, def int) {
	if v != def {
		b.args = append(b.args, "--"+name+"="+strconv.Itoa(v))
	}
}

// Duration renders --name=v unless v equals def; time.Duration.String
// parses back to the same value.
func (b *Builder) Duration(name string, v, def time.Duration) {
	if v != def {
		b.args = append(b.args, "--"+name+"="+v.String())
	}
}

// List renders a repeatable flag once per value, in order.
func (b *Builder) List(name string, vs []string) {
	for _, v := range vs {
		b.args = append(b.args, "--"+name+"="+v)
	}
}

// Map renders a repeatable key=value flag once per entry, sorted by key so
// that a unit's content does not change from run to run.
func (b *Builder) Map(name string, m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.args = append(b.args, "--"+name+"="+k+"="+m[k])
	}
}

// Unset returns the flags of fs that were not set by the last Parse,
// sorted, leaving out the names in except. A round-trip test of a fully
// populated configuration uses it to prove that Args renders every flag
// AddFlags binds: a flag added later without its Args line shows up here.
func Unset(fs *flag.FlagSet, except ...string) []string {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	skip := map[string]bool{}
	for _, e := range except {
		skip[e] = true
	}
	var out []string
	fs.VisitAll(func(f *flag.Flag) {
		if !set[f.Name] && !skip[f.Name] {
			out = append(out, f.Name)
		}
	})
	return out
}
