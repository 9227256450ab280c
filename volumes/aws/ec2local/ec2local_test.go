package ec2local

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The provider's tests drive this server through the real SDK; these check
// what the SDK does not show: IMDSv2 is enforced and errors have EC2's shape.

func TestIMDSRequiresToken(t *testing.T) {
	s := New(Options{Region: "eu-west-1"})
	id := s.AddInstance("eu-west-1b", nil)
	hs := httptest.NewServer(s.IMDSHandler(id))
	defer hs.Close()

	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+path, nil)
		if token != "" {
			req.Header.Set("X-aws-ec2-metadata-token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/latest/meta-data/instance-id", ""); code != http.StatusUnauthorized {
		t.Fatalf("GET without a token: %d, want 401 (IMDSv2 only)", code)
	}
	req, _ := http.NewRequest(http.MethodPut, hs.URL+"/latest/api/token", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("PUT token without a TTL: %v %v, want 400", resp, err)
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT token: %v %v", resp, err)
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for path, want := range map[string]string{
		"/latest/meta-data/instance-id":                 id,
		"/latest/meta-data/placement/availability-zone": "eu-west-1b",
		"/latest/meta-data/placement/region":            "eu-west-1",
	} {
		if code, body := get(path, string(tok)); code != http.StatusOK || body != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, code, body, want)
		}
	}
	if code, _ := get("/latest/meta-data/instance-id", "forged"); code != http.StatusUnauthorized {
		t.Fatalf("GET with a forged token: %d, want 401", code)
	}
}

func TestErrorShape(t *testing.T) {
	s := New(Options{})
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	post := func(form url.Values) (int, string) {
		resp, err := http.PostForm(hs.URL, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := post(url.Values{"Action": {"RunInstances"}, "Version": {APIVersion}})
	if code != http.StatusBadRequest || !strings.Contains(body, "<Response><Errors><Error><Code>InvalidAction</Code>") {
		t.Fatalf("unknown action: %d %s", code, body)
	}
	code, body = post(url.Values{"Action": {"AttachVolume"}, "Version": {APIVersion}, "VolumeId": {"vol-0"}, "InstanceId": {"i-0"}, "Device": {"/dev/xvdf"}})
	if code != http.StatusBadRequest || !strings.Contains(body, "<Code>InvalidVolume.NotFound</Code>") {
		t.Fatalf("attach of a missing volume: %d %s", code, body)
	}
	code, body = post(url.Values{"Action": {"DescribeVolumes"}, "Version": {"2014-01-01"}})
	if code != http.StatusBadRequest || !strings.Contains(body, "Version") {
		t.Fatalf("old API version: %d %s", code, body)
	}
	code, body = post(url.Values{"Action": {"DescribeVolumes"}, "Version": {APIVersion}})
	if code != http.StatusOK || !strings.Contains(body, `<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">`) {
		t.Fatalf("DescribeVolumes: %d %s", code, body)
	}
}

// TestDescribeInstancesThroughSDK: the SDK's EC2 client parses instances,
// their state, zone, private address and tags, and the filters apply.
func TestDescribeInstancesThroughSDK(t *testing.T) {
	s := New(Options{})
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	a := s.AddInstance("us-east-1a", map[string]string{"KubernetesCluster": "c1"})
	b := s.AddInstance("us-east-1b", map[string]string{"KubernetesCluster": "c1"})
	s.AddInstance("us-east-1a", map[string]string{"KubernetesCluster": "other"})
	if err := s.SetInstanceState(b, InstanceStopped); err != nil {
		t.Fatal(err)
	}
	client := ec2.New(ec2.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(hs.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
	})
	out, err := client.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("tag:KubernetesCluster"), Values: []string{"c1"}},
		{Name: aws.String("instance-state-name"), Values: []string{"running", "stopped"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			got = append(got, fmt.Sprintf("%s %s %s %s %s", aws.ToString(in.InstanceId), in.State.Name, aws.ToString(in.Placement.AvailabilityZone), aws.ToString(in.PrivateIpAddress), aws.ToString(in.Tags[0].Value)))
		}
	}
	want := []string{a + " running us-east-1a 10.0.0.2 c1", b + " stopped us-east-1b 10.0.0.3 c1"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Fatalf("DescribeInstances = %q, want %q", got, want)
	}
}
