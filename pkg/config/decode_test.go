package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// minimalNode is a valid NodeConfig with only the required fields.
const minimalNode = `apiVersion: agents.kopsnode.io/v1alpha1
kind: NodeConfig
metadata:
  name: nodes
spec:
  clusterName: example.k8s.local
  role: node
  kubernetesVersion: 1.32.4
`

func TestDecodeStrictErrors(t *testing.T) {
	header := "apiVersion: agents.kopsnode.io/v1alpha1\nkind: NodeConfig\n"
	cases := []struct {
		name string
		yaml string
		want string // the whole error text, source "t.yaml"
	}{
		{"unknown top-level field", header + "status: {}\n",
			`t.yaml:3:1: status: unknown field (known fields: apiVersion, kind, metadata, spec)`},
		{"unknown nested field with suggestion", header + "spec:\n  kubelet:\n    maxpods: 3\n",
			`t.yaml:5:5: spec.kubelet.maxpods: unknown field (did you mean "maxPods"?)`},
		{"string where int", header + "spec:\n  kubelet:\n    maxPods: many\n",
			`t.yaml:5:14: spec.kubelet.maxPods: expected an integer, got the string "many"`},
		{"float where int", header + "spec:\n  networking:\n    mtu: 1500.5\n",
			`t.yaml:5:10: spec.networking.mtu: expected an integer, got the number 1500.5`},
		{"map where list", header + "spec:\n  packages:\n    curl: true\n",
			`t.yaml:5:5: spec.packages: expected a list, got a map`},
		{"list where map", header + "spec:\n  sysctls: [a, b]\n",
			`t.yaml:4:12: spec.sysctls: expected a map, got a list`},
		{"map where string", header + "spec:\n  role: {name: node}\n",
			`t.yaml:4:9: spec.role: expected a string, got a map`},
		{"string where bool", header + "spec:\n  gossip:\n    forward: \"true\"\n",
			`t.yaml:5:14: spec.gossip.forward: expected true or false, got the string "true"`},
		{"list item of wrong type", header + "spec:\n  etcdClusters:\n    - name: main\n    - main\n",
			`t.yaml:6:7: spec.etcdClusters[1]: expected a map, got the string "main"`},
		{"duplicate field", header + "metadata:\n  name: a\n  name: b\n",
			`t.yaml:5:3: metadata.name: duplicate field (first set at line 4)`},
		{"duplicate top-level key", header + "kind: NodeConfig\n",
			`t.yaml:3:1: kind: duplicate field (first set at line 2)`},
		{"integer out of range", header + "spec:\n  kubelet:\n    maxPods: 2147483648\n",
			`t.yaml:5:14: spec.kubelet.maxPods: integer 2147483648 is out of range`},
		{"integer beyond int64", header + "spec:\n  kubelet:\n    maxPods: 99999999999999999999\n",
			`t.yaml:5:14: spec.kubelet.maxPods: expected an integer, got the number 99999999999999999999`},
		{"invalid unicode escape", header + "metadata:\n  name: \"\\ud800\"\n",
			`t.yaml:4: invalid YAML: found invalid Unicode character escape code`},
		{"unsupported tag", header + "metadata:\n  name: !!binary aGVsbG8=\n",
			`t.yaml:4:9: metadata.name: unsupported YAML tag "!!binary"`},
		{"custom tag", header + "metadata: !thing\n  name: x\n",
			`t.yaml:3:11: metadata: unsupported YAML tag "!thing"`},
		{"map key not a string", header + "spec:\n  sysctls:\n    [a]: b\n",
			`t.yaml:5:5: spec.sysctls: map key must be a string, got a list`},
		{"merge key", header + "spec:\n  kubelet:\n    <<: {maxPods: 3}\n",
			`t.yaml:5:5: spec.kubelet: YAML merge keys (<<) are not supported; write the fields out`},
		{"empty file", "", `t.yaml: empty document`},
		{"comments only", "# nothing\n\n", `t.yaml: empty document`},
		{"null document", "~\n", `t.yaml:1:1: empty document`},
		{"explicit empty document", "---\n...\n", `t.yaml:2:1: empty document`},
		{"scalar document", "hello\n", `t.yaml:1:1: expected a map at the top of the document, got the string "hello"`},
		{"two documents", minimalNode + "---\n" + minimalNode,
			`t.yaml:10:1: more than one YAML document; a configuration file holds exactly one`},
		{"syntax error", header + "spec: [\n", `t.yaml:3: invalid YAML: did not find expected node content`},
		{"missing apiVersion", "kind: NodeConfig\n",
			`t.yaml:1:1: apiVersion: required; must be "agents.kopsnode.io/v1alpha1"`},
		{"wrong apiVersion", "apiVersion: v1\nkind: NodeConfig\n",
			`t.yaml:1:13: apiVersion: "v1" is not supported; must be "agents.kopsnode.io/v1alpha1"`},
		{"wrong kind", "apiVersion: agents.kopsnode.io/v1alpha1\nkind: Cluster\n",
			`t.yaml:2:7: kind: expected "NodeConfig", got "Cluster"`},
		{"missing kind", "apiVersion: agents.kopsnode.io/v1alpha1\n",
			`t.yaml:1:1: kind: required; must be "NodeConfig"`},
		{"several errors in file order", header + "spec:\n  role: [x]\n  kubelet:\n    maxPods: x\n  bogus: 1\n",
			"t.yaml:4:9: spec.role: expected a string, got a list\n" +
				"t.yaml:6:14: spec.kubelet.maxPods: expected an integer, got the string \"x\"\n" +
				"t.yaml:7:3: spec.bogus: unknown field (known fields: clusterName, role, kubernetesVersion, assets, containerRuntime, kubelet, kubeProxy, networking, sysctls, kernelModules, packages, etcdClusters, gossip, controlPlane, volume)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := DecodeNodeConfig([]byte(tc.yaml), "t.yaml")
			if err == nil {
				t.Fatalf("decoded without error: %+v", n)
			}
			if n != nil {
				t.Errorf("returned a document along with the error")
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got: %s\nwant: %s", err, tc.want)
			}
			var es *Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is a %T, not *config.Errors", err)
			}
			if got := len(*es); got != strings.Count(tc.want, "\n")+1 {
				t.Errorf("got %d FieldErrors, want one per line of %q", got, tc.want)
			}
		})
	}
}

func TestDecodeGenericDispatchesOnKind(t *testing.T) {
	doc, err := Decode([]byte(minimalNode), "n.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := doc.(*NodeConfig); !ok {
		t.Fatalf("Decode returned a %T, want *NodeConfig", doc)
	}
	c := "apiVersion: agents.kopsnode.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: a.k8s.local\n"
	doc, err = Decode([]byte(c), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := doc.(*Cluster); !ok || got.Metadata.Name != "a.k8s.local" {
		t.Fatalf("Decode returned %#v, want *Cluster a.k8s.local", doc)
	}
	_, err = Decode([]byte("apiVersion: agents.kopsnode.io/v1alpha1\nkind: Pod\n"), "p.yaml")
	if want := `p.yaml:2:7: kind: "Pod" is not a known kind; must be "Cluster" or "NodeConfig"`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
	if _, err := DecodeCluster([]byte(minimalNode), "n.yaml"); err == nil || !strings.Contains(err.Error(), `kind: expected "Cluster", got "NodeConfig"`) {
		t.Errorf("DecodeCluster of a NodeConfig: %v", err)
	}
}

func TestDecodeValues(t *testing.T) {
	doc := minimalNode + `  sysctls:
    net.ipv4.ip_forward: 1
    vm.overcommit_ratio: 0.50
    kernel.panic_on_oops: true
  kubelet:
    maxPods: 0x40
    clusterDomain: ~
  networking:
    mode: kubenet
  gossip: {}
  containerRuntime:
    systemdCgroup: false
  packages: []
`
	n, err := DecodeNodeConfig([]byte(doc), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	wantSysctls := map[string]string{"net.ipv4.ip_forward": "1", "vm.overcommit_ratio": "0.50", "kernel.panic_on_oops": "true"}
	if !reflect.DeepEqual(n.Spec.Sysctls, wantSysctls) {
		t.Errorf("sysctls %v, want the literal text of each scalar %v", n.Spec.Sysctls, wantSysctls)
	}
	if n.Spec.Kubelet.MaxPods != 64 {
		t.Errorf("maxPods %d, want 64 from 0x40", n.Spec.Kubelet.MaxPods)
	}
	if n.Spec.Kubelet.ClusterDomain != "" {
		t.Errorf("null clusterDomain decoded as %q, want unset", n.Spec.Kubelet.ClusterDomain)
	}
	if n.Spec.Gossip == nil {
		t.Error("gossip: {} decoded as nil, want an empty (enabled) GossipSpec")
	}
	if c := n.Spec.ContainerRuntime.SystemdCgroup; c == nil || *c {
		t.Errorf("systemdCgroup %v, want explicit false", c)
	}
	if n.Spec.Packages != nil {
		t.Errorf("packages: [] decoded as %#v, want nil", n.Spec.Packages)
	}
	if n.Spec.Role != RoleNode {
		t.Errorf("role %q", n.Spec.Role)
	}
}

func TestDecodeAliases(t *testing.T) {
	doc := minimalNode + `  assets:
    - name: kubelet
      sha256: 861ab2df63cb8eb7bca38d0ff49ec7342484f029cc1e4029296cf3c7741b5b1d
      urls: &mirrors
        - https://a.example.com/x
        - https://b.example.com/x
    - name: kubectl
      sha256: 395f59c5feae8d3603a535ad929a25ce48e6864f4333591c3da1448ba745325c
      urls: *mirrors
`
	n, err := ParseNodeConfig([]byte(doc), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(n.Spec.Assets[0].URLs, n.Spec.Assets[1].URLs) || len(n.Spec.Assets[1].URLs) != 2 {
		t.Errorf("alias not expanded: %+v", n.Spec.Assets)
	}
}

func TestDecodeAliasBombIsCutOff(t *testing.T) {
	// Each level multiplies by ten: 10^6 URLs from a few hundred bytes.
	var b strings.Builder
	b.WriteString(minimalNode)
	b.WriteString("  assets:\n    - &a0 {name: x, sha256: y, urls: [u, u, u, u, u, u, u, u, u, u]}\n")
	for i := 1; i <= 5; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", ")
		fmt.Fprintf(&b, "    - &a%d [%s]\n", i, refs)
	}
	b.WriteString("  packages: [*a5]\n")
	_, err := DecodeNodeConfig([]byte(b.String()), "bomb.yaml")
	if err == nil {
		t.Fatal("decoded an alias bomb")
	}
	// The nesting does not match the types, so the bomb is refused for
	// that; the flat variant below exercises the value budget.
	flat := minimalNode + "  assets: [&b {name: x, sha256: y, urls: [" +
		strings.TrimSuffix(strings.Repeat("u, ", 100), ", ") + "]}, " +
		strings.TrimSuffix(strings.Repeat("*b, ", 200), ", ") + "]\n"
	_, err = DecodeNodeConfig([]byte(flat), "flat.yaml")
	if err == nil || !strings.Contains(err.Error(), "more than 10000 values (each use of an alias counted)") {
		t.Fatalf("flat alias bomb: %v", err)
	}
	var es *Errors
	if errors.As(err, &es) && len(*es) != 1 {
		t.Errorf("budget error reported %d times, want once", len(*es))
	}
}

func TestDecodeSelfReferentialAlias(t *testing.T) {
	// An anchor whose value contains its own alias makes a cycle in the
	// node tree; the walk is bounded by the depth of the Go types.
	doc := "apiVersion: agents.kopsnode.io/v1alpha1\nkind: NodeConfig\nspec: &s\n  gossip: *s\n"
	_, err := DecodeNodeConfig([]byte(doc), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "spec.gossip.gossip: unknown field") {
		t.Fatalf("got %v", err)
	}
}

func TestDecodeDeepNesting(t *testing.T) {
	deep := minimalNode + "  packages: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n"
	_, err := DecodeNodeConfig([]byte(deep), "deep.yaml")
	if err == nil || !strings.Contains(err.Error(), "deep.yaml") {
		t.Fatalf("got %v", err)
	}
}

func TestDecodeSizeLimit(t *testing.T) {
	big := []byte(minimalNode + "# " + strings.Repeat("x", MaxDocumentSize) + "\n")
	_, err := DecodeNodeConfig(big, "big.yaml")
	want := fmt.Sprintf("big.yaml: document is %d bytes, larger than the limit of %d bytes", len(big), MaxDocumentSize)
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	cases := []struct {
		e    FieldError
		want string
	}{
		{FieldError{Source: "s3://b/c/nodeup/x.yaml", Line: 3, Column: 7, Path: "spec.role", Msg: "bad"}, "s3://b/c/nodeup/x.yaml:3:7: spec.role: bad"},
		{FieldError{Source: "f.yaml", Line: 3, Msg: "bad"}, "f.yaml:3: bad"},
		{FieldError{Source: "f.yaml", Msg: "empty document"}, "f.yaml: empty document"},
		{FieldError{Path: "spec.role", Msg: "bad"}, "spec.role: bad"},
		{FieldError{Line: 2, Column: 1, Path: "kind", Msg: "bad"}, "line 2:1: kind: bad"},
	}
	for _, tc := range cases {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}
