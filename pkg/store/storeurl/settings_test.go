package storeurl

import (
	"flag"
	"reflect"
	"strings"
	"testing"
)

// Args is the inverse of AddFlags, for every combination of settings.
func TestSettingsArgsParseBack(t *testing.T) {
	for _, s := range []Settings{
		{URL: "file:///var/store"},
		{URL: "s3://bucket/prefix", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1", PathStyle: true},
		{URL: "s3://bucket/prefix", Region: "us-east-2"},
		{URL: "s3://bucket", PathStyle: true},
	} {
		var got Settings
		fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
		got.AddFlags(fs)
		if err := fs.Parse(s.Args()); err != nil {
			t.Fatalf("%q: %v", s.Args(), err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("%q parsed back as %+v, want %+v", s.Args(), got, s)
		}
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
	}
}

// Set settings override the environment; an endpoint implies path style.
func TestSettingsOverrideEnvironment(t *testing.T) {
	env := map[string]string{EnvS3Region: "env-region", EnvS3AccessKey: "AK", EnvS3SecretKey: "SK"}
	base, err := OptionsFromLookup(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	o := Settings{URL: "s3://b/p", Endpoint: "http://127.0.0.1:9000", Region: "flag-region"}.apply(base)
	if o.S3Endpoint != "http://127.0.0.1:9000" || !o.S3PathStyle || o.S3Region != "flag-region" || o.S3AccessKey != "AK" {
		t.Fatalf("options %+v", o)
	}
	o = Settings{URL: "s3://b/p"}.apply(base)
	if o.S3Region != "env-region" || o.S3PathStyle {
		t.Fatalf("unset settings changed the environment's: %+v", o)
	}
}

func TestSettingsValidateNamesFlags(t *testing.T) {
	err := Settings{URL: "ftp://x", Endpoint: "127.0.0.1:9000"}.Validate()
	for _, want := range []string{"--store:", "--store-endpoint:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v lacks %q", err, want)
		}
	}
}
