package seeds

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/kopsnode/agents/pkg/store/file"
)

func TestStatic(t *testing.T) {
	s := Static{"10.0.0.1:3996"}
	got, _ := s.Seeds(context.Background())
	got[0] = "changed"
	if again, _ := s.Seeds(context.Background()); again[0] != "10.0.0.1:3996" {
		t.Fatal("Static returned its own slice")
	}
}

func TestRegistryLeasesExpire(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	reg := Registry{Store: st, Cluster: "c.k8s.local", Now: func() time.Time { return now }}
	if err := reg.Register(ctx, "a", "10.0.0.1:3996", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(ctx, "b", "10.0.0.2:3996", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := reg.Seeds(ctx)
	sort.Strings(got)
	if err != nil || !reflect.DeepEqual(got, []string{"10.0.0.1:3996", "10.0.0.2:3996"}) {
		t.Fatalf("Seeds = %v, %v", got, err)
	}
	now = now.Add(2 * time.Minute)
	if got, _ := reg.Seeds(ctx); !reflect.DeepEqual(got, []string{"10.0.0.2:3996"}) {
		t.Fatalf("after a's lease expired: %v", got)
	}
	if err := reg.Register(ctx, "a/b", "10.0.0.1:3996", time.Minute); err == nil {
		t.Fatal("node name with a slash accepted")
	}
	if err := reg.Register(ctx, "c", "10.0.0.3", time.Minute); err == nil || !strings.Contains(err.Error(), "10.0.0.3") {
		t.Fatalf("address without a port: err = %v", err)
	}
}

func TestRegistrationRefreshesAndDeregisters(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := Registry{Store: st, Cluster: "c"}
	g, err := reg.Keep(ctx, "a", "10.0.0.1:3996", 300*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The lease is 300 ms; after a second it must still be there, refreshed.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if got, _ := reg.Seeds(ctx); len(got) != 1 {
			t.Fatalf("registration lapsed while kept: %v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := reg.Seeds(ctx); len(got) != 0 {
		t.Fatalf("still registered after Close: %v", got)
	}
}

// fakeEC2 is a small HTTP server speaking the EC2 Query API wire protocol
// (form-encoded Action=DescribeInstances, XML answer) so the real
// aws-sdk-go-v2 client runs against it without any cloud access.
type fakeEC2 struct {
	mu      sync.Mutex
	filters []string
}

func (f *fakeEC2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Form.Get("Action") != "DescribeInstances" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	var fs []string
	for i := 1; r.Form.Get(fmt.Sprintf("Filter.%d.Name", i)) != ""; i++ {
		fs = append(fs, r.Form.Get(fmt.Sprintf("Filter.%d.Name", i))+"="+r.Form.Get(fmt.Sprintf("Filter.%d.Value.1", i)))
	}
	f.filters = fs
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	item := func(ip string) string {
		if ip == "" {
			return "<item><instanceId>i-noip</instanceId></item>"
		}
		return "<item><instanceId>i-" + ip + "</instanceId><privateIpAddress>" + ip + "</privateIpAddress></item>"
	}
	const head = `<?xml version="1.0" encoding="UTF-8"?><DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>req</requestId><reservationSet>`
	if r.Form.Get("NextToken") == "" {
		fmt.Fprint(w, head+`<item><reservationId>r-1</reservationId><instancesSet>`+item("10.0.0.1")+item("")+`</instancesSet></item></reservationSet><nextToken>page2</nextToken></DescribeInstancesResponse>`)
		return
	}
	fmt.Fprint(w, head+`<item><reservationId>r-2</reservationId><instancesSet>`+item("10.0.0.2")+`</instancesSet></item></reservationSet></DescribeInstancesResponse>`)
}

func TestEC2ByTag(t *testing.T) {
	fake := &fakeEC2{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	client := ec2.New(ec2.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
	e := EC2{Client: client, Tags: map[string]string{"KubernetesCluster": "c.k8s.local", "k8s.io/role/control-plane": "1"}, Port: 3996}
	got, err := e.Seeds(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []string{"10.0.0.1:3996", "10.0.0.2:3996"}) {
		t.Fatalf("seeds = %v, want both pages' instances with addresses", got)
	}
	want := []string{"instance-state-name=running", "tag:KubernetesCluster=c.k8s.local", "tag:k8s.io/role/control-plane=1"}
	if !reflect.DeepEqual(fake.filters, want) {
		t.Fatalf("filters sent = %v, want %v", fake.filters, want)
	}
}
