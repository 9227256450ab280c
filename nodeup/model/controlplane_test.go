package model

import (
	"flag"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/runconfig"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	units "github.com/kopsnode/agents/systemd-units"
)

func cpInput(t *testing.T) *Input {
	return &Input{Config: load(t, "control-plane"), StoreURL: "file:///s", NodeAddress: netip.MustParseAddr("10.0.0.10")}
}

// unitArgs reads a rendered unit's ExecStart back into its arguments.
func unitArgs(t *testing.T, in *Input, unit string) []string {
	t.Helper()
	g, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	tk, ok := g.Get(tasks.UnitID(unit))
	if !ok {
		t.Fatalf("no %s", unit)
	}
	for _, l := range strings.Split(tk.(*tasks.Service).Content, "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			return units.SplitExecLine(v)[1:]
		}
	}
	t.Fatalf("%s has no ExecStart", unit)
	return nil
}

func hasArg(args []string, a string) bool { return slices.Contains(args, a) }

func TestAPIServerFlags(t *testing.T) {
	in := cpInput(t)
	args := unitArgs(t, in, "kube-apiserver.service")
	for _, want := range []string{
		"--advertise-address=10.0.0.10", "--secure-port=443",
		"--etcd-servers=https://127.0.0.1:4001", "--etcd-servers-overrides=/events#https://127.0.0.1:4002",
		"--etcd-cafile=" + APIServerEtcdClientDir + "/etcd-ca.crt",
		"--service-cluster-ip-range=100.64.0.0/13", "--service-account-issuer=https://api.internal.example.k8s.local",
		"--enable-bootstrap-token-auth=true", "--authorization-mode=Node,RBAC",
		// From controlPlane.apiServer.extraArgs in the example.
		"--profiling=false",
	} {
		if !hasArg(args, want) {
			t.Errorf("kube-apiserver lacks %s:\n%v", want, args)
		}
	}
	// No events cluster: no override.
	n := load(t, "control-plane")
	n.Spec.EtcdClusters = n.Spec.EtcdClusters[:1]
	in.Config = n
	for _, a := range unitArgs(t, in, "kube-apiserver.service") {
		if strings.HasPrefix(a, "--etcd-servers-overrides") {
			t.Errorf("override without an events cluster: %s", a)
		}
	}
}

func TestExtraArgsOverrideInPlace(t *testing.T) {
	in := cpInput(t)
	in.Config.Spec.ControlPlane.ControllerManager.ExtraArgs = map[string]string{"node-cidr-mask-size": "26", "v": "2"}
	args := unitArgs(t, in, "kube-controller-manager.service")
	if !hasArg(args, "--node-cidr-mask-size=26") || hasArg(args, "--node-cidr-mask-size=24") || args[len(args)-1] != "--v=2" {
		t.Errorf("extra args not applied once, in place: %v", args)
	}
	for _, want := range []string{"--allocate-node-cidrs=true", "--cluster-cidr=100.96.0.0/11", "--controllers=*,bootstrapsigner,tokencleaner",
		"--cluster-signing-key-file=" + CAKey, "--use-service-account-credentials=true", "--leader-elect=true"} {
		if !hasArg(args, want) {
			t.Errorf("kube-controller-manager lacks %s", want)
		}
	}
}

func TestAPIServingCertificateNames(t *testing.T) {
	g, err := Build(cpInput(t))
	if err != nil {
		t.Fatal(err)
	}
	tk, _ := g.Get(tasks.FileID(APIServerCert))
	r := tk.(*tasks.Certificate).Request
	for _, n := range []string{"api.internal.example.k8s.local", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} {
		if !slices.Contains(r.DNSNames, n) {
			t.Errorf("serving certificate lacks %s", n)
		}
	}
	var ips []string
	for _, ip := range r.IPs {
		ips = append(ips, ip.String())
	}
	for _, ip := range []string{"100.64.0.1", "10.0.0.10", "127.0.0.1"} {
		if !slices.Contains(ips, ip) {
			t.Errorf("serving certificate lacks %s: %v", ip, ips)
		}
	}
}

func TestControlPlaneNeedsItsAssets(t *testing.T) {
	for _, name := range []string{"kube-apiserver", "kubectl", "etcd-3.6.16", "etcdutl-3.6.16"} {
		n := load(t, "control-plane")
		n.Spec.Assets = slices.DeleteFunc(n.Spec.Assets, func(a config.Asset) bool { return a.Name == name })
		_, err := Build(&Input{Config: n})
		if err == nil || !strings.Contains(err.Error(), `no asset named "`+name+`"`) {
			t.Errorf("without %s: err = %v", name, err)
		}
	}
}

func TestEtcdManagerSeedAndCertDir(t *testing.T) {
	in := cpInput(t)
	main := unitArgs(t, in, "etcd-manager-main.service")
	events := unitArgs(t, in, "etcd-manager-events.service")
	for _, args := range [][]string{main, events} {
		if !hasArg(args, "--seed-members=3") || !hasArg(args, "--seed-etcd-version=3.6.16") {
			t.Errorf("etcd-manager args lack the seed: %v", args)
		}
		// It runs the etcd binaries where nodeup installs them (given or
		// by default).
		c := runconfig.DefaultConfig()
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		c.AddFlags(fs)
		if err := fs.Parse(args[1:]); err != nil || c.BinDirRoot != EtcdBinDirRoot {
			t.Errorf("etcd-manager looks for etcd in %q, nodeup installs it in %q (%v)", c.BinDirRoot, EtcdBinDirRoot, err)
		}
	}
	if !hasArg(main, "--apiserver-client-cert-dir="+APIServerEtcdClientDir) {
		t.Errorf("main etcd-manager does not keep the API server's certificate: %v", main)
	}
	for _, a := range events {
		if strings.HasPrefix(a, "--apiserver-client-cert-dir") {
			t.Errorf("events etcd-manager writes an API server directory nothing reads: %s", a)
		}
	}
	// Workers get none of it.
	w, err := Build(&Input{Config: load(t, "nodes")})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{tasks.UnitID("kube-apiserver.service"), tasks.FileID(EtcdBin("3.6.16")), tasks.FileID(AdminKubeconfig), tasks.FileID(CAKey)} {
		if _, ok := w.Get(id); ok {
			t.Errorf("worker has %s", id)
		}
	}
}

// With the aws volume provider, etcd-manager finds its peers through the
// EBS volumes too, with the provider's EC2 and metadata settings, after
// gossip when gossip is on and before the store registry.
func TestEtcdManagerAWSVolumesDiscovery(t *testing.T) {
	in := cpInput(t)
	aws := config.AWSVolumeSpec{Region: "eu-west-1", EC2Endpoint: "http://127.0.0.1:4566", IMDSEndpoint: "http://127.0.0.1:4567"}
	in.Config.Spec.Volume = &config.VolumeProviderSpec{Provider: config.VolumeProviderAWS, AWS: &aws}
	for _, gossip := range []bool{false, true} {
		if gossip {
			in.Config.Spec.Gossip = &config.GossipSpec{}
		} else {
			in.Config.Spec.Gossip = nil
		}
		args := unitArgs(t, in, "etcd-manager-main.service")
		c := runconfig.DefaultConfig()
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		c.AddFlags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("gossip %v: %v", gossip, err)
		}
		want := []string{runconfig.DiscoveryAWSVolumes, runconfig.DiscoveryStore}
		if gossip {
			want = append([]string{runconfig.DiscoveryGossip}, want...)
		}
		if !slices.Equal(c.Discovery, want) || c.AWS != aws {
			t.Errorf("gossip %v: discovery %v with %+v, want %v with %+v", gossip, c.Discovery, c.AWS, want, aws)
		}
	}
}

// The backups settings of an etcd cluster reach its etcd-manager's unit:
// verification, deltas (0s turns them off) and retention; unset ones are
// etcd-manager's defaults.
func TestEtcdManagerBackupSettings(t *testing.T) {
	parse := func(in *Input, unit string) runconfig.Config {
		t.Helper()
		c := runconfig.DefaultConfig()
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		c.AddFlags(fs)
		if err := fs.Parse(unitArgs(t, in, unit)[1:]); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", unit, err)
		}
		return c
	}
	in := cpInput(t)
	b := &in.Config.Spec.EtcdClusters[0].Backups
	b.VerifyInterval, b.DeltaInterval = "6h", "0s"
	b.Retention.HourlyDays, b.Retention.DailyDays = new(2), new(30)
	in.Config.Spec.EtcdClusters[1].Backups.DeltaInterval = "30s"
	if err := in.Config.Validate(); err != nil {
		t.Fatal(err)
	}
	main, events := parse(in, "etcd-manager-main.service"), parse(in, "etcd-manager-events.service")
	if main.VerifyInterval != 6*time.Hour || main.DeltaInterval != 0 || main.RetentionHourlyDays != 2 || main.RetentionDailyDays != 30 {
		t.Errorf("main: verify %s, deltas %s, retention %d/%d; want 6h, 0s, 2/30", main.VerifyInterval, main.DeltaInterval, main.RetentionHourlyDays, main.RetentionDailyDays)
	}
	d := runconfig.DefaultConfig()
	if events.DeltaInterval != 30*time.Second || events.VerifyInterval != d.VerifyInterval || events.RetentionHourlyDays != d.RetentionHourlyDays {
		t.Errorf("events: deltas %s, verify %s, hourly %d; want 30s and the defaults %s, %d", events.DeltaInterval, events.VerifyInterval, events.RetentionHourlyDays, d.VerifyInterval, d.RetentionHourlyDays)
	}
}
