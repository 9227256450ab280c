package app

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/kopsnode/agents/nodeup/internal/nodeuptest"
	"github.com/kopsnode/agents/nodeup/kuberender"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store"
	s3store "github.com/kopsnode/agents/pkg/store/s3"
	"github.com/kopsnode/agents/pkg/testtools"
)

// workerObjects are the only objects a worker reads from the store: its
// node configuration, the kubernetes CA's public certificate and the node
// bootstrap token (plus the gossip keyring when gossip is on, which this
// worker's configuration is not). docs/state-store.md lists them.
func workerObjects(cluster, group string) []string {
	return []string{
		ConfigKey(cluster, group),
		cluster + "/pki/" + pki.CAKubernetes + "/ca.crt",
		bootstraptoken.Key(cluster),
	}
}

// restrictedCredentials asks MinIO's STS (AssumeRole, signed with the
// server's root credentials) for temporary credentials whose session policy
// allows s3:GetObject on the given objects only.
func restrictedCredentials(t *testing.T, m *testtools.MinIO, bucket string, keys []string) aws.Credentials {
	t.Helper()
	var resources []string
	for _, k := range keys {
		resources = append(resources, "arn:aws:s3:::"+bucket+"/"+k)
	}
	policy, _ := json.Marshal(map[string]any{
		"Version":   "2012-10-17",
		"Statement": []map[string]any{{"Effect": "Allow", "Action": []string{"s3:GetObject"}, "Resource": resources}},
	})
	c := sts.New(sts.Options{
		Region:       m.Region,
		BaseEndpoint: aws.String(m.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:         aws.String("arn:xxx:xxx:xxx:xxxx"), // MinIO ignores it
		RoleSessionName: aws.String("worker"),
		Policy:          aws.String(string(policy)),
		DurationSeconds: aws.Int32(900),
	})
	if err != nil {
		t.Fatalf("minio AssumeRole: %v\n%s", err, m.Log())
	}
	return aws.Credentials{AccessKeyID: *out.Credentials.AccessKeyId, SecretAccessKey: *out.Credentials.SecretAccessKey, SessionToken: *out.Credentials.SessionToken}
}

func s3Store(t *testing.T, m *testtools.MinIO, bucket string, c aws.Credentials) store.Store {
	t.Helper()
	s, err := s3store.New(context.Background(), s3store.Options{
		Bucket: bucket, Endpoint: m.Endpoint, Region: m.Region, PathStyle: true,
		AccessKey: c.AccessKeyID, SecretKey: c.SecretAccessKey, SessionToken: c.SessionToken,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestWorkerConvergesWithCredentialsLimitedToItsObjects gives a worker
// store credentials that can read only its configuration, the public CA
// certificate and the bootstrap token, and converges it: no CA key is read
// or created, and the bootstrap kubeconfig carries the token.
func TestWorkerConvergesWithCredentialsLimitedToItsObjects(t *testing.T) {
	const cluster, group, bucket = "test.k8s.local", "g1", "state"
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	m.CreateBucket(t, bucket, false)
	admin := s3Store(t, m, bucket, aws.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey})

	f := newFixture(t, "node")
	nodeuptest.Put(t, admin, ConfigKey(cluster, group), f.cfg)
	// What the first control-plane node publishes, with full credentials.
	tok := nodeuptest.SeedControlPlane(t, admin, cluster)

	creds := restrictedCredentials(t, m, bucket, workerObjects(cluster, group))
	worker := s3Store(t, m, bucket, creds)
	ctx := context.Background()
	// The restriction holds: the CA key bundle and writes are refused.
	if _, _, err := store.ReadAll(ctx, worker, cluster+"/pki/"+pki.CAKubernetes+"/ca.pem"); err == nil {
		t.Fatal("the worker's credentials read the CA key bundle")
	}
	if _, err := worker.Put(ctx, cluster+"/pki/x", strings.NewReader("x"), store.Condition{}); err == nil {
		t.Fatal("the worker's credentials wrote to the store")
	}

	o := f.opts()
	o.Store = "s3://" + bucket
	o.OpenStore = func(ctx context.Context, bc BootConfig) (store.Store, error) {
		return s3store.New(ctx, s3store.Options{
			Bucket: bucket, Endpoint: m.Endpoint, Region: m.Region, PathStyle: true,
			AccessKey: creds.AccessKeyID, SecretKey: creds.SecretAccessKey, SessionToken: creds.SessionToken,
		})
	}
	o.Engine.TaskTimeout = 20 * time.Second
	f.apply(o)

	kc, err := kuberender.ParseKubeconfig([]byte(f.read(model.KubeletBootstrapKubeconfig)))
	if err != nil {
		t.Fatal(err)
	}
	if kc.Credentials.Token != tok.String() || kc.Server != "https://127.0.0.1" {
		t.Errorf("bootstrap kubeconfig: server %s, token matches %t", kc.Server, kc.Credentials.Token == tok.String())
	}
	env := f.read(model.KubeletEnv)
	for _, want := range []string{"--bootstrap-kubeconfig=" + model.KubeletBootstrapKubeconfig, "--kubeconfig=" + model.KubeletKubeconfig} {
		if !strings.Contains(env, want) {
			t.Errorf("%s lacks %s:\n%s", model.KubeletEnv, want, env)
		}
	}
	if !strings.Contains(f.read(model.KubeletConfig), "rotateCertificates: true") {
		t.Error("the worker's kubelet does not rotate its certificate")
	}
	if strings.TrimSpace(f.read(model.KubeletClientCA)) == "" {
		t.Error("no client CA file")
	}
	// nodeup wrote no kubelet kubeconfig: the kubelet writes it after its CSR.
	if _, err := os.Stat(filepath.Join(f.root, model.KubeletKubeconfig)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("nodeup wrote the worker's kubelet kubeconfig (%v)", err)
	}

	// Without the token, the error names the store key.
	if err := admin.Delete(ctx, bootstraptoken.Key(cluster)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(f.root, model.KubeletBootstrapKubeconfig)); err != nil {
		t.Fatal(err)
	}
	o.Engine.TaskTimeout = time.Second
	_, err = Apply(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "s3://"+bucket+"/"+bootstraptoken.Key(cluster)) {
		t.Fatalf("apply without a token: %v", err)
	}
}
