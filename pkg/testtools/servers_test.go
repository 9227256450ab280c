package testtools

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// TestMinIO starts a versioned MinIO, writes an object, kills the server and
// restarts it: the object survives and the server is ready again.
func TestMinIO(t *testing.T) {
	ctx := context.Background()
	m := StartMinIO(t, MinIOOptions{Versioning: true})
	m.CreateBucket(t, "bucket", true)
	c := m.Client()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bucket"), Key: aws.String("k"), Body: strings.NewReader("v")}); err != nil {
		t.Fatal(err)
	}
	v, err := c.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String("bucket")})
	if err != nil || v.Status != s3types.BucketVersioningStatusEnabled {
		t.Fatalf("bucket versioning %v, %v; want enabled", v, err)
	}
	m.Kill(t)
	if _, err := http.Get(m.Endpoint + "/minio/health/live"); err == nil {
		t.Fatal("MinIO still answers after Kill")
	}
	m.Restart(t)
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bucket"), Key: aws.String("k")})
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	b, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(b) != "v" {
		t.Fatalf("after restart the object reads %q", b)
	}
}

// TestMinIOBadCredentials: the throwaway credentials are the only ones.
func TestMinIOBadCredentials(t *testing.T) {
	m := StartMinIO(t, MinIOOptions{})
	m.SecretKey = "not-the-secret"
	_, err := m.Client().ListBuckets(context.Background(), &s3.ListBucketsInput{})
	if err == nil {
		t.Fatal("MinIO accepted a wrong secret key")
	}
}

func TestFakeGCS(t *testing.T) {
	f := StartFakeGCS(t)
	f.CreateBucket(t, "bucket")
	get := func() string {
		resp, err := http.Get(f.Endpoint + "/storage/v1/b/bucket")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET bucket: %s: %s", resp.Status, b)
		}
		return string(b)
	}
	if !strings.Contains(get(), `"bucket"`) {
		t.Fatal("bucket not listed")
	}
	f.Kill(t)
	if _, err := http.Get(f.Endpoint + "/storage/v1/b"); err == nil {
		t.Fatal("fake-gcs-server still answers after Kill")
	}
	f.Restart(t)
	if !strings.Contains(get(), `"bucket"`) {
		t.Fatal("bucket lost across restart")
	}
}
