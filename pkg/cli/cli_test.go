package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"strings"
	"testing"
)

func testApp(ran *[]string) *App {
	var name string
	return &App{
		Name:    "demo",
		Summary: "a demo binary",
		Commands: []*Command{{
			Name:    "greet",
			Summary: "say hello",
			Flags:   func(fs *flag.FlagSet) { fs.StringVar(&name, "name", "world", "who to greet") },
			Run: func(ctx context.Context, env *Env, args []string) error {
				*ran = append(*ran, name)
				if name == "bad" {
					return errors.New("bad name")
				}
				if name == "usage" {
					return ErrUsage
				}
				return nil
			},
		}},
	}
}

func TestRun(t *testing.T) {
	cases := []struct {
		args       []string
		wantCode   int
		wantOut    string
		wantErr    string
		wantRanArg string
	}{
		{args: nil, wantCode: 2, wantOut: "Commands:"},
		{args: []string{"--help"}, wantCode: 0, wantOut: "greet"},
		{args: []string{"help", "greet"}, wantCode: 0, wantOut: "-name"},
		{args: []string{"greet", "--help"}, wantCode: 0, wantOut: "who to greet"},
		{args: []string{"version"}, wantCode: 0, wantOut: "demo dev"},
		{args: []string{"--version"}, wantCode: 0, wantOut: "demo dev"},
		{args: []string{"nope"}, wantCode: 2, wantErr: `unknown command "nope"`},
		{args: []string{"greet", "--bogus"}, wantCode: 2, wantErr: "flag provided but not defined: -bogus"},
		{args: []string{"greet", "--name", "ann"}, wantCode: 0, wantRanArg: "ann"},
		{args: []string{"greet", "--name", "bad"}, wantCode: 1, wantErr: "demo greet: bad name"},
		{args: []string{"greet", "--name", "usage"}, wantCode: 2, wantErr: "usage error"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			var ran []string
			var out, errOut bytes.Buffer
			code := testApp(&ran).Run(context.Background(), &Env{Stdout: &out, Stderr: &errOut}, c.args)
			if code != c.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, c.wantCode, errOut.String())
			}
			if !strings.Contains(out.String(), c.wantOut) {
				t.Errorf("stdout = %q, want it to contain %q", out.String(), c.wantOut)
			}
			if !strings.Contains(errOut.String(), c.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", errOut.String(), c.wantErr)
			}
			if c.wantRanArg != "" && (len(ran) != 1 || ran[0] != c.wantRanArg) {
				t.Errorf("command ran with %v, want [%s]", ran, c.wantRanArg)
			}
		})
	}
}

func TestVersionJSON(t *testing.T) {
	var ran []string
	var out, errOut bytes.Buffer
	if code := testApp(&ran).Run(context.Background(), &Env{Stdout: &out, Stderr: &errOut}, []string{"version", "-o", "json"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var v struct {
		Binary, Version, GoVersion string
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("version -o json is not JSON: %v\n%s", err, out.String())
	}
	if v.Binary != "demo" || v.Version == "" || v.GoVersion == "" {
		t.Fatalf("version JSON = %+v", v)
	}
}

func TestPrintRejectsUnknownFormat(t *testing.T) {
	err := Print(&bytes.Buffer{}, "yaml", nil, nil)
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), `"yaml"`) {
		t.Fatalf("Print(yaml) = %v, want a usage error naming the format", err)
	}
}
