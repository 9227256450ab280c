package gossipkeys

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/kopsnode/agents/pkg/cli"
)

// runCLI runs `protokube gossip-keys ARGS` in process.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = testApp().Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}, append([]string{CommandName}, args...))
	return code, out.String(), errb.String()
}

func storeFlags(dir string) []string {
	return []string{"--store", "file://" + dir, "--cluster", testCluster}
}

func TestCommandCreateTwice(t *testing.T) {
	dir := t.TempDir()
	url := "file://" + dir + "/" + testCluster + "/secrets/gossip-keys"
	code, out, errOut := runCLI(t, append([]string{"create"}, storeFlags(dir)...)...)
	if code != 0 || !strings.Contains(out, "created gossip keyring "+url) {
		t.Fatalf("first create: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	before, err := os.ReadFile(dir + "/" + testCluster + "/secrets/gossip-keys")
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCLI(t, append([]string{"create"}, storeFlags(dir)...)...)
	if code != 0 || !strings.Contains(out, url+" already exists") || !strings.Contains(out, "left unchanged") {
		t.Fatalf("second create: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	after, _ := os.ReadFile(dir + "/" + testCluster + "/secrets/gossip-keys")
	if !bytes.Equal(before, after) {
		t.Fatal("second create changed the keyring")
	}
}

// Eight processes (as on the first boot of every control-plane node) race
// to create the keyring: one creates it, all report the same primary.
func TestEightCreatorProcessesYieldOneKeyring(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	results := make([]Result, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(exe, append([]string{CommandName, "create", "-o", "json"}, storeFlags(dir)...)...)
			cmd.Env = append(os.Environ(), cliEnv+"=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			<-start
			out, err := cmd.Output()
			if err != nil {
				errs[i] = err
				t.Errorf("creator %d: %v: %s", i, err, stderr.String())
				return
			}
			errs[i] = json.Unmarshal(out, &results[i])
		}()
	}
	close(start)
	wg.Wait()
	created := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("creator %d: %v", i, errs[i])
		}
		if r.Changed {
			created++
		}
		if r.Keyring.Primary != results[0].Keyring.Primary || r.Keyring.NumKeys != 1 {
			t.Fatalf("creator %d saw primary %s with %d keys, creator 0 saw %s", i, r.Keyring.Primary, r.Keyring.NumKeys, results[0].Keyring.Primary)
		}
	}
	if created != 1 {
		t.Fatalf("%d creators report creating the keyring, want exactly 1", created)
	}
	st := newStore(t, dir)
	ks := load(t, ForCluster(st, testCluster))
	if Fingerprint(ks.Primary) != results[0].Keyring.Primary || len(ks.Keys) != 0 {
		t.Fatalf("stored keyring primary %s with %d listed keys; creators reported %s", Fingerprint(ks.Primary), len(ks.Keys), results[0].Keyring.Primary)
	}
	infos, err := st.List(context.Background(), testCluster+"/")
	if err != nil || len(infos) != 1 {
		t.Fatalf("objects under the cluster: %v (%v), want only the keyring", infos, err)
	}
}

// encodings are the forms in which a key could leak into output.
func encodings(key string) []string {
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return []string{key}
	}
	return []string{
		key,
		strings.TrimRight(key, "="),
		base64.URLEncoding.EncodeToString(b),
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
		string(b),
	}
}

// Every command, in text and JSON, successful or refused, prints no key
// material; and the JSON forms describe the keyring by fingerprints.
func TestOutputHasNoKeyMaterial(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			kr := ForCluster(newStore(t, dir), testCluster)
			keys := map[string]bool{}
			var output strings.Builder
			run := func(wantCode int, args ...string) string {
				t.Helper()
				args = append(append(args, storeFlags(dir)...), "-o", format)
				code, out, errOut := runCLI(t, args...)
				if code != wantCode {
					t.Fatalf("%v: exit %d, want %d; stdout %q stderr %q", args, code, wantCode, out, errOut)
				}
				output.WriteString(out)
				output.WriteString(errOut)
				if ks, _, err := kr.Load(context.Background()); err == nil {
					keys[ks.Primary] = true
					for _, k := range ks.Keys {
						keys[k] = true
					}
				}
				return out
			}
			run(1, "show")
			run(0, "create")
			run(0, "create")
			run(1, "rotate", "--step", "use")
			run(1, "rotate", "--step", "remove")
			run(0, "rotate", "--step", "add")
			run(0, "show")
			run(1, "rotate", "--step", "remove")
			run(0, "rotate", "--step", "use")
			run(0, "rotate", "--step", "use")
			run(0, "show")
			run(0, "rotate", "--step", "remove")
			last := run(0, "show")
			if len(keys) != 2 {
				t.Fatalf("saw %d distinct keys over the rotation, want 2", len(keys))
			}
			all := output.String()
			for k := range keys {
				for _, enc := range encodings(k) {
					if strings.Contains(all, enc) {
						t.Fatalf("output contains key material (%q):\n%s", enc, all)
					}
				}
				if !strings.Contains(all, Fingerprint(k)) {
					t.Fatalf("output never names key %s by its fingerprint:\n%s", Fingerprint(k), all)
				}
			}
			if format == "json" {
				var sum Summary
				if err := json.Unmarshal([]byte(last), &sum); err != nil {
					t.Fatalf("show -o json: %v\n%s", err, last)
				}
				ks := load(t, kr)
				if sum.NumKeys != 1 || sum.Primary != Fingerprint(ks.Primary) || sum.Next != StepAdd || sum.URL != kr.URL() || len(sum.Keys) != 1 || !sum.Keys[0].Primary {
					t.Fatalf("show -o json = %+v, want one key, primary %s", sum, Fingerprint(ks.Primary))
				}
			}
		})
	}
}

func TestShowText(t *testing.T) {
	dir := t.TempDir()
	kr := ForCluster(newStore(t, dir), testCluster)
	ctx := context.Background()
	if _, err := kr.Create(ctx, strings.NewReader(strings.Repeat("a", KeySize))); err != nil {
		t.Fatal(err)
	}
	add, err := kr.Rotate(ctx, StepAdd, strings.NewReader(strings.Repeat("b", KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, append([]string{"show"}, storeFlags(dir)...)...)
	if code != 0 {
		t.Fatalf("show: exit %d: %s", code, errOut)
	}
	primary := Fingerprint(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", KeySize))))
	for _, want := range []string{"keys:       2", "primary:    " + primary, "next step:  use", primary + "     primary", add.Added + "     accepted, newest", kr.URL()} {
		if !strings.Contains(out, want) {
			t.Fatalf("show output lacks %q:\n%s", want, out)
		}
	}
}

func TestCommandUsageErrorsWriteNothing(t *testing.T) {
	dir := t.TempDir()
	if code, _, errOut := runCLI(t, append([]string{"create"}, storeFlags(dir)...)...); code != 0 {
		t.Fatal(errOut)
	}
	path := dir + "/" + testCluster + "/secrets/gossip-keys"
	before, _ := os.ReadFile(path)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing subcommand"},
		{[]string{"frobnicate"}, `unknown subcommand "frobnicate"`},
		{append([]string{"rotate"}, storeFlags(dir)...), `--step: "" is not one of add, use, remove`},
		{append([]string{"rotate", "--step", "swap"}, storeFlags(dir)...), `--step: "swap"`},
		{append([]string{"rotate", "--step", "add", "-o", "yaml"}, storeFlags(dir)...), `-o: "yaml"`},
		{[]string{"create", "--cluster", testCluster}, "--store: required"},
		{[]string{"create", "--store", "file://" + dir, "--cluster", "a/b"}, `--cluster: "a/b"`},
		{append([]string{"show", "extra"}, storeFlags(dir)...), "unexpected arguments"},
		{[]string{"show", "--bogus"}, "flag provided but not defined"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Fatalf("%v: exit %d, stderr %q; want exit 2 saying %q", tc.args, code, errOut, tc.want)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a usage error changed the keyring")
	}
	code, out, _ := runCLI(t, "rotate", "--help")
	if code != 0 || !strings.Contains(out, "-step") || !strings.Contains(out, "protokube gossip-keys rotate") {
		t.Fatalf("rotate --help: exit %d\n%s", code, out)
	}
	code, _, errOut := runCLI(t, "show", "--store", "file://"+dir+"/missing", "--cluster", testCluster)
	if code != 1 || !strings.Contains(errOut, "file://"+dir+"/missing") {
		t.Fatalf("show on a missing store directory: exit %d, stderr %q; want exit 1 naming the store", code, errOut)
	}
}
