package storeurl

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/testtools"
)

func TestParse(t *testing.T) {
	good := []struct {
		raw  string
		want Location
	}{
		{"file:///var/lib/kopsnode/store", Location{Scheme: "file", Path: "/var/lib/kopsnode/store"}},
		{"file://localhost/srv/store", Location{Scheme: "file", Path: "/srv/store"}},
		{"s3://my-bucket", Location{Scheme: "s3", Bucket: "my-bucket"}},
		{"s3://my-bucket/", Location{Scheme: "s3", Bucket: "my-bucket"}},
		{"s3://my-bucket/a/b/", Location{Scheme: "s3", Bucket: "my-bucket", Path: "a/b"}},
		{"gs://b.example.com/clusters", Location{Scheme: "gs", Bucket: "b.example.com", Path: "clusters"}},
	}
	for _, c := range good {
		got, err := Parse(c.raw)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.raw, got, err, c.want)
		}
	}
	bad := []struct{ raw, why string }{
		{"", "empty"},
		{"relative/path", "no scheme"},
		{"file://relative/path", "absolute"},
		{"file:relative", "absolute"},
		{"file:///a/../b", `".."`},
		{"ftp://host/x", `unknown scheme "ftp"`},
		{"s3://", "no bucket"},
		{"s3:///prefix", "no bucket"},
		{"gs://", "no bucket"},
		{"s3://b/a//c", "prefix"},
		{"s3://b/../c", "prefix"},
		{"s3://b:9000/x", "not a bucket name"},
		{"s3://key:secret@b/x", "credentials"},
		{"s3://b/x?region=eu-west-1", "query"},
		{"s3://b/%zz", "invalid URL escape"},
	}
	for _, c := range bad {
		_, err := Parse(c.raw)
		if err == nil || !strings.Contains(err.Error(), c.why) || !strings.Contains(err.Error(), `"`+c.raw+`"`) {
			t.Errorf("Parse(%q) = %v; want an error naming the URL and saying %q", c.raw, err, c.why)
		}
	}
}

func TestOptionsFromLookup(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	o, err := OptionsFromLookup(env(map[string]string{EnvS3Endpoint: "http://127.0.0.1:9000", EnvS3Region: "eu-west-1"}))
	if err != nil || !o.S3PathStyle || o.S3Endpoint != "http://127.0.0.1:9000" || o.S3Region != "eu-west-1" {
		t.Fatalf("with an endpoint: %+v, %v; want path style on", o, err)
	}
	o, err = OptionsFromLookup(env(map[string]string{EnvS3Endpoint: "http://127.0.0.1:9000", EnvS3PathStyle: "false"}))
	if err != nil || o.S3PathStyle {
		t.Fatalf("path style off: %+v, %v", o, err)
	}
	o, err = OptionsFromLookup(env(nil))
	if err != nil || o.S3PathStyle || o.S3Endpoint != "" {
		t.Fatalf("empty environment: %+v, %v", o, err)
	}
	for _, m := range []map[string]string{
		{EnvS3PathStyle: "maybe"},
		{EnvS3AccessKey: "only-the-key"},
		{EnvS3Endpoint: "127.0.0.1:9000"},
		{EnvGCSEndpoint: "ftp://x"},
	} {
		_, err := OptionsFromLookup(env(m))
		var name string
		for k := range m {
			name = k
		}
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("OptionsFromLookup(%v) = %v; want an error naming %s", m, err, name)
		}
	}
}

func roundTrip(t *testing.T, s store.Store, wantURL string) {
	t.Helper()
	defer s.Close()
	if s.URL() != wantURL {
		t.Fatalf("URL() = %q, want %q", s.URL(), wantURL)
	}
	ctx := context.Background()
	if _, err := s.Put(ctx, "c/cluster.yaml", strings.NewReader("spec"), store.Condition{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	b, _, err := store.ReadAll(ctx, s, "c/cluster.yaml")
	if err != nil || string(b) != "spec" {
		t.Fatalf("read %q, %v", b, err)
	}
	_, err = s.Stat(ctx, "c/missing")
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), wantURL+"/c/missing") {
		t.Fatalf("Stat of a missing key = %v; want not found naming %s/c/missing", err, wantURL)
	}
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), "file://"+dir+"/store", Options{FileCreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s, "file://"+dir+"/store")
}

func TestOpenS3(t *testing.T) {
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	m.CreateBucket(t, "state", false)
	t.Setenv(EnvS3Endpoint, m.Endpoint)
	t.Setenv(EnvS3Region, m.Region)
	t.Setenv(EnvS3AccessKey, m.AccessKey)
	t.Setenv(EnvS3SecretKey, m.SecretKey)
	t.Setenv(EnvS3PathStyle, "")
	opts, err := OptionsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), "s3://state/clusters/", opts)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s, "s3://state/clusters")
}

func TestOpenGCS(t *testing.T) {
	f := testtools.StartFakeGCS(t)
	f.CreateBucket(t, "state")
	s, err := Open(context.Background(), "gs://state/clusters", Options{GCSEndpoint: f.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s, "gs://state/clusters")
}
