package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ControlPlanesEnv sets how many control-plane machines the cluster test
// boots: 1 in CI (2 cores), 3 with `make e2e-ha`.
const ControlPlanesEnv = "KOPSNODE_E2E_CONTROL_PLANES"

func controlPlanes(t *testing.T) int {
	s := os.Getenv(ControlPlanesEnv)
	if s == "" {
		return 1
	}
	n, err := strconv.Atoi(s)
	if err != nil || (n != 1 && n != 3) {
		t.Fatalf("%s=%q: want 1 or 3", ControlPlanesEnv, s)
	}
	return n
}

// TestClusterOnBootedMachines is the suite's main job end to end, with the
// real binaries: control-plane machines and a worker boot from a node image,
// receive their userdata through cloud-init, run nodeup from a real S3
// store (MinIO) with every asset fetched from an HTTP mirror and checked by
// sha256, and become a Kubernetes cluster: etcd through etcd-manager on each
// control-plane machine's own disk, the API server, controller manager and
// scheduler, kubelets joined by TLS bootstrap, pod networking across nodes
// through protokube's routes, cluster DNS. The test then runs a workload
// and checks pod to pod across nodes, pod to Service, DNS, logs and exec.
func TestClusterOnBootedMachines(t *testing.T) {
	cps := controlPlanes(t)
	c := newClusterFixture(t, cps+1)
	// The worker boots with the control plane, before any API answers, as
	// on a cloud: it must converge and join on its own.
	bc := c.bootCluster(clusterBoot{ControlPlanes: cps, Workers: 1, Together: true})
	cp, worker := bc.ControlPlanes[0], bc.Workers[0]
	c.checkNodeupStatus(worker, cp)

	c.checkWorkload(cp, worker)
	if cps == 3 {
		c.checkControlPlaneLoss(cp, bc.ControlPlanes[1])
	}
}

// checkControlPlaneLoss powers a control-plane machine off: the API keeps
// answering through the others and writes succeed (etcd keeps its quorum);
// powered on again, the machine rejoins on its own etcd volume with no
// operator action.
func (c *clusterFixture) checkControlPlaneLoss(cp, victim *clusterMachine) {
	t := c.t
	t.Helper()
	volume := func() string {
		out, err := victim.Exec(context.Background(), "findmnt", "-no", "UUID", "/mnt/etcd/main")
		if err != nil {
			t.Fatalf("etcd volume of %s: %v", victim.Name(), err)
		}
		return strings.TrimSpace(out)
	}
	before := volume()
	victim.PowerOff()
	t.Logf("%s powered off", victim.Name())
	write := func(name string) {
		waitFor(t, "a write through the API with "+victim.Name()+" "+name, 3*time.Minute, func() (bool, string) {
			out, err := c.kubectl(cp, 30*time.Second, "create", "configmap", name, "--from-literal=at="+time.Now().UTC().Format(time.RFC3339))
			return err == nil, fmt.Sprintf("%q %v", out, err)
		})
	}
	write("written-with-one-control-plane-off")
	victim.PowerOn()
	c.waitNodesReady(cp, []string{victim.Name()}, 6*time.Minute)
	if after := volume(); after != before {
		t.Errorf("%s came back on etcd volume %s, want its own %s", victim.Name(), after, before)
	}
	waitFor(t, victim.Name()+"'s etcd-manager healthy", 3*time.Minute, func() (bool, string) {
		out, err := victim.Exec(context.Background(), "systemctl", "is-active", "etcd-manager-main.service")
		return err == nil && strings.TrimSpace(out) == "active", out
	})
	write("written-after-rejoin")
	t.Logf("%s rejoined on its own etcd volume %s", victim.Name(), before)
}

// waitAPI waits until the API server answers kubectl on a control-plane
// machine.
func (c *clusterFixture) waitAPI(cp *clusterMachine, timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, "the API server to answer on "+cp.Name(), timeout, func() (bool, string) {
		out, err := c.kubectl(cp, 30*time.Second, "get", "--raw", "/readyz")
		if err == nil && strings.TrimSpace(out) == "ok" {
			return true, ""
		}
		return false, fmt.Sprintf("%q %v", out, err)
	})
}

// waitNodesReady waits until every named node reports Ready.
func (c *clusterFixture) waitNodesReady(cp *clusterMachine, names []string, timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("nodes %v Ready", names), timeout, func() (bool, string) {
		ready, state, err := c.nodeReadiness(cp)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range names {
			if !ready[n] {
				return false, state
			}
		}
		return true, ""
	})
	out, _ := c.kubectl(cp, 30*time.Second, "get", "nodes", "-o", "wide")
	c.t.Logf("kubectl get nodes -o wide:\n%s", out)
}

// nodeReadiness returns which nodes are Ready and a summary for messages.
func (c *clusterFixture) nodeReadiness(cp *clusterMachine) (map[string]bool, string, error) {
	out, err := c.kubectl(cp, 30*time.Second, "get", "nodes", "-o", "json")
	if err != nil {
		return nil, "", err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				Conditions []struct {
					Type, Status, Reason, Message string
				} `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, "", fmt.Errorf("decoding nodes: %w", err)
	}
	ready := map[string]bool{}
	var b strings.Builder
	for _, n := range list.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" {
				ready[n.Metadata.Name] = cond.Status == "True"
				fmt.Fprintf(&b, "%s Ready=%s (%s: %s); ", n.Metadata.Name, cond.Status, cond.Reason, cond.Message)
			}
		}
	}
	return ready, b.String(), nil
}

// testWorkload runs the test image as a Deployment spread over two nodes
// (tolerating the control plane's taint) behind a Service.
const testWorkload = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: testapp
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: testapp}
  template:
    metadata:
      labels: {app: testapp}
    spec:
      tolerations:
        - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector:
            matchLabels: {app: testapp}
      containers:
        - name: testapp
          image: localhost/kopsnode/testapp:v1
          imagePullPolicy: Never
          args: [serve, --listen, ":8080"]
          ports: [{containerPort: 8080}]
          readinessProbe:
            httpGet: {path: /healthz, port: 8080}
            periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: testapp
  namespace: default
spec:
  selector: {app: testapp}
  ports: [{port: 8080, targetPort: 8080}]
`

type testPod struct {
	Name, Node, IP string
}

// checkWorkload deploys the test workload and checks the cluster's
// networking from inside a pod on the worker: pod to pod on another node
// (a control-plane node, wherever the scheduler spread it), pod to Service
// by IP and by name, a DNS lookup, and kubectl logs and exec.
func (c *clusterFixture) checkWorkload(cp, worker *clusterMachine) {
	t := c.t
	t.Helper()
	if err := cp.WriteFile("/root/testapp.yaml", []byte(testWorkload), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.kubectl(cp, time.Minute, "apply", "-f", "/root/testapp.yaml"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	if out, err := c.kubectl(cp, 5*time.Minute, "rollout", "status", "deployment/testapp", "--timeout=4m"); err != nil {
		desc, _ := c.kubectl(cp, time.Minute, "describe", "pods", "-l", "app=testapp")
		t.Fatalf("the test workload did not become ready: %v\n%s\n%s", err, out, desc)
	}
	pods := c.testPods(cp)
	var local, remote testPod
	for _, p := range pods {
		if p.Node == worker.Name() {
			local = p
		} else if p.Node != "" {
			remote = p
		}
	}
	if local.Name == "" || remote.Name == "" {
		t.Fatalf("test pods %+v: want one on %s and one on another node", pods, worker.Name())
	}
	exec := func(args ...string) (string, error) {
		return c.kubectl(cp, time.Minute, append([]string{"exec", local.Name, "--", "/testapp"}, args...)...)
	}
	// Pod to pod across nodes: the answer names the remote pod.
	if out, err := exec("get", "http://"+remote.IP+":8080/"); err != nil || strings.TrimSpace(out) != remote.Name {
		t.Errorf("pod %s on %s to pod %s (%s) on %s: %q, %v", local.Name, worker.Name(), remote.Name, remote.IP, remote.Node, out, err)
	} else {
		t.Logf("pod %s (%s) on %s reached pod %s (%s) on %s", local.Name, local.IP, worker.Name(), remote.Name, remote.IP, remote.Node)
	}
	svcIP, err := c.kubectl(cp, time.Minute, "get", "service", "testapp", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		t.Fatalf("service IP: %v", err)
	}
	// Names need cluster DNS: CoreDNS's pods ready, and the worker's
	// kube-proxy routing its Service to them. The test workload may be
	// ready before that (CI once asked 5 s too early), so the DNS checks
	// wait for CoreDNS's rollout and then give the Service's routing up to
	// a minute.
	if out, err := c.kubectl(cp, 5*time.Minute, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=4m"); err != nil {
		desc, _ := c.kubectl(cp, time.Minute, "-n", "kube-system", "describe", "pods", "-l", "k8s-app=kube-dns")
		t.Fatalf("CoreDNS did not become ready: %v\n%s\n%s", err, out, desc)
	}
	retry := func(what string, f func() (string, error)) (out string, err error) {
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(2 * time.Second) {
			if out, err = f(); err == nil || time.Now().After(deadline) {
				return out, err
			}
			t.Logf("%s: %v (retrying)", what, err)
		}
	}
	// Pod to Service by IP (kube-proxy) and by name (cluster DNS).
	for _, target := range []string{svcIP, "testapp.default.svc.cluster.local"} {
		out, err := retry("pod to service "+target, func() (string, error) { return exec("get", "http://"+target+":8080/") })
		if err != nil || (strings.TrimSpace(out) != local.Name && strings.TrimSpace(out) != remote.Name) {
			t.Errorf("pod to service %s: %q, %v", target, out, err)
		} else {
			t.Logf("pod to service %s:8080 answered by %s", target, strings.TrimSpace(out))
		}
	}
	out, err := retry("DNS lookup", func() (string, error) { return exec("lookup", "testapp.default.svc.cluster.local") })
	if err != nil || !strings.Contains(out, svcIP) {
		t.Errorf("DNS lookup of the service from a pod: %q, %v; want %s", out, err, svcIP)
	} else {
		t.Logf("DNS lookup of testapp.default.svc.cluster.local from a pod: %s", strings.TrimSpace(out))
	}
	// kubectl logs reaches the kubelet of the worker through the API server.
	if out, err := c.kubectl(cp, time.Minute, "logs", local.Name); err != nil || !strings.Contains(out, "serving") {
		t.Errorf("kubectl logs %s: %q, %v", local.Name, out, err)
	} else {
		t.Logf("kubectl logs %s (on %s) works", local.Name, worker.Name())
	}
}

// testPods lists the test workload's pods with their nodes and IPs.
func (c *clusterFixture) testPods(cp *clusterMachine) []testPod {
	c.t.Helper()
	out, err := c.kubectl(cp, time.Minute, "get", "pods", "-l", "app=testapp", "-o", "json")
	if err != nil {
		c.t.Fatalf("listing test pods: %v", err)
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     struct {
				NodeName string `json:"nodeName"`
			} `json:"spec"`
			Status struct {
				PodIP string `json:"podIP"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		c.t.Fatalf("decoding pods: %v", err)
	}
	var pods []testPod
	for _, p := range list.Items {
		pods = append(pods, testPod{Name: p.Metadata.Name, Node: p.Spec.NodeName, IP: p.Status.PodIP})
	}
	return pods
}
