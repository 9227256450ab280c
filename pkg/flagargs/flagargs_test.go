package flagargs

import (
	"flag"
	"reflect"
	"testing"
	"time"
)

type sample struct {
	Name  string
	On    bool
	Off   bool
	N     int
	Every time.Duration
	Seeds []string
}

func (s *sample) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.Name, "name", s.Name, "")
	fs.BoolVar(&s.On, "on", s.On, "")
	fs.BoolVar(&s.Off, "off", s.Off, "")
	fs.IntVar(&s.N, "n", s.N, "")
	fs.DurationVar(&s.Every, "every", s.Every, "")
	fs.Func("seed", "", func(v string) error { s.Seeds = append(s.Seeds, v); return nil })
}

func defaults() sample { return sample{Name: "x", Off: true, N: 3, Every: time.Second} }

func (s sample) args() []string {
	d := defaults()
	var b Builder
	b.String("name", s.Name, d.Name)
	b.Bool("on", s.On, d.On)
	b.Bool("off", s.Off, d.Off)
	b.Int("n", s.N, d.N)
	b.Duration("every", s.Every, d.Every)
	b.List("seed", s.Seeds)
	return b.Args()
}

// The builder's output parses back to the value it rendered, defaults are
// left out, and Unset names exactly the flags a rendering did not set.
func TestBuilderRoundTrip(t *testing.T) {
	full := sample{Name: "a b=c", On: true, Off: false, N: -1, Every: 90 * time.Minute, Seeds: []string{"s1", "s2"}}
	for _, want := range []sample{defaults(), full} {
		got := defaults()
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		got.addFlags(fs)
		if err := fs.Parse(want.args()); err != nil {
			t.Fatalf("%q: %v", want.args(), err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q parsed to %+v, want %+v", want.args(), got, want)
		}
		unset := Unset(fs)
		if reflect.DeepEqual(want, full) && len(unset) != 0 {
			t.Errorf("fully populated value leaves %q unset", unset)
		}
		if !reflect.DeepEqual(want, full) && len(unset) != 6 {
			t.Errorf("defaults: unset %q, want every flag", unset)
		}
	}
	if a := defaults().args(); a != nil {
		t.Errorf("defaults render %q", a)
	}
	if u := Unset(func() *flag.FlagSet {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		s := defaults()
		s.addFlags(fs)
		return fs
	}(), "name", "on", "off", "n", "every"); !reflect.DeepEqual(u, []string{"seed"}) {
		t.Errorf("Unset with exceptions: %q", u)
	}
}

func TestMapSorted(t *testing.T) {
	var b Builder
	b.Map("device", map[string]string{"main": "/dev/a", "events": "/dev/b"})
	if want := []string{"--device=events=/dev/b", "--device=main=/dev/a"}; !reflect.DeepEqual(b.Args(), want) {
		t.Fatalf("%q, want %q", b.Args(), want)
	}
}
