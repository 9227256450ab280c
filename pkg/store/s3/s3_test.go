package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/storetest"
	"github.com/kopsnode/agents/pkg/testtools"
)

func newStore(t *testing.T, m *testtools.MinIO, bucket, prefix string, mod func(*Options)) *Store {
	t.Helper()
	opts := Options{
		Bucket:       bucket,
		Prefix:       prefix,
		Endpoint:     m.Endpoint,
		Region:       m.Region,
		PathStyle:    true,
		AccessKey:    m.AccessKey,
		SecretKey:    m.SecretKey,
		PartSize:     MinPartSize,
		ListPageSize: 7,
	}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestContract runs the contract suite against a real MinIO on an erasure
// set (so buckets can be versioned), one fresh versioned bucket per store.
func TestContract(t *testing.T) {
	m := testtools.StartMinIO(t, testtools.MinIOOptions{Versioning: true})
	var n atomic.Int32
	fresh := func(t *testing.T) store.Store {
		b := fmt.Sprintf("store-%03d", n.Add(1))
		m.CreateBucket(t, b, true)
		return newStore(t, m, b, "clusters", nil)
	}
	storetest.Run(t, fresh,
		storetest.WithMissingBucket(func(t *testing.T) store.Store {
			return newStore(t, m, "no-such-bucket", "clusters", nil)
		}),
		storetest.WithBadCredentials(func(t *testing.T) store.Store {
			b := fmt.Sprintf("store-%03d", n.Add(1))
			m.CreateBucket(t, b, false)
			return newStore(t, m, b, "", func(o *Options) { o.SecretKey = "wrong-secret-key" })
		}),
		storetest.WithVersionCount(func(t *testing.T, s store.Store, key string) int {
			return countVersions(t, m, s.(*Store).Bucket(), s.(*Store).ObjectKey(key))
		}),
		storetest.WithServerKill(m.Kill, m.Restart),
	)
}

// TestContractUnversioned runs the suite on a single-folder MinIO, whose
// buckets cannot be versioned; ListObjectVersions still answers there.
func TestContractUnversioned(t *testing.T) {
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	var n atomic.Int32
	storetest.Run(t, func(t *testing.T) store.Store {
		b := fmt.Sprintf("plain-%03d", n.Add(1))
		m.CreateBucket(t, b, false)
		return newStore(t, m, b, "", nil)
	}, storetest.WithLargeSize(16<<20))
}

func countVersions(t *testing.T, m *testtools.MinIO, bucket, key string) int {
	t.Helper()
	out, err := m.Client().ListObjectVersions(context.Background(), &awss3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &key})
	if err != nil {
		t.Fatalf("ListObjectVersions: %v", err)
	}
	n := 0
	for _, v := range out.Versions {
		if aws.ToString(v.Key) == key {
			n++
		}
	}
	for _, d := range out.DeleteMarkers {
		if aws.ToString(d.Key) == key {
			n++
		}
	}
	return n
}

// Conditions apply to multipart uploads too: they are checked when the
// upload completes.
func TestMultipartConditions(t *testing.T) {
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	m.CreateBucket(t, "multipart", false)
	s := newStore(t, m, "multipart", "p", nil)
	ctx := context.Background()
	big := func(c byte) io.Reader { return strings.NewReader(strings.Repeat(string(c), 12<<20)) }

	v1, err := s.Put(ctx, "obj", big('a'), store.Condition{IfAbsent: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Put(ctx, "obj", big('b'), store.Condition{IfAbsent: true})
	if !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("multipart create-if-absent over an object = %v, want precondition failure", err)
	}
	v2, err := s.Put(ctx, "obj", big('c'), store.Condition{IfVersion: v1.Version})
	if err != nil {
		t.Fatalf("multipart CAS from the current version: %v", err)
	}
	_, err = s.Put(ctx, "obj", big('d'), store.Condition{IfVersion: v1.Version})
	if !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("multipart CAS from a stale version = %v, want precondition failure", err)
	}
	b, info, err := store.ReadAll(ctx, s, "obj")
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != v2.Version || len(b) != 12<<20 || b[0] != 'c' || b[len(b)-1] != 'c' {
		t.Fatalf("object is %d bytes of %q at %s, want the CAS write at %s", len(b), b[:1], info.Version, v2.Version)
	}
	// No upload is left behind by the refused writes.
	ups, err := m.Client().ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: aws.String("multipart")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Fatalf("%d multipart uploads left behind", len(ups.Uploads))
	}
}

func TestURLAndKeys(t *testing.T) {
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	m.CreateBucket(t, "keys", false)
	s := newStore(t, m, "keys", "/a/b/", nil)
	if s.URL() != "s3://keys/a/b" {
		t.Fatalf("URL = %q", s.URL())
	}
	ctx := context.Background()
	if _, err := s.Put(ctx, "c/d", strings.NewReader("x"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Client().HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("keys"), Key: aws.String("a/b/c/d")}); err != nil {
		t.Fatalf("object not at a/b/c/d in the bucket: %v", err)
	}
	// A store on the bucket root sees the prefixed key in full.
	root := newStore(t, m, "keys", "", nil)
	got, err := root.List(ctx, "")
	if err != nil || len(got) != 1 || got[0].Key != "a/b/c/d" {
		t.Fatalf("root List = %+v, %v", got, err)
	}
	if _, err := New(ctx, Options{}); err == nil {
		t.Fatal("New without a bucket succeeded")
	}
	if _, err := New(ctx, Options{Bucket: "b", Prefix: "a/../b"}); err == nil || !strings.Contains(err.Error(), "s3://b/a/../b") {
		t.Fatalf("New with a bad prefix = %v, want an error naming the URL", err)
	}
}

// An unreachable endpoint fails with an error naming the URL rather than
// hanging.
func TestUnreachableEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, Options{Bucket: "b", Endpoint: "http://127.0.0.1:1", PathStyle: true, AccessKey: "a", SecretKey: "b", RetryMaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Stat(ctx, "k")
	if err == nil || !strings.Contains(err.Error(), "s3://b/k") {
		t.Fatalf("Stat on an unreachable endpoint = %v, want an error naming s3://b/k", err)
	}
}
