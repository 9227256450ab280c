// Package manifests is `protokube manifests`: on a control-plane node it
// applies the cluster's system manifests (the kubelet TLS-bootstrap token
// and its RBAC bindings, kube-proxy's binding, and CoreDNS) to the API
// server with server-side apply, once the API answers, and again on every
// pass, so that a changed configuration, a deleted object or a field changed
// by hand converges back. The objects are built from the official Go types
// (k8s.io/api) by a pure function, Objects; the Reconciler applies them.
package manifests

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/releases"
)

// CoreDNSImage is the CoreDNS image the Deployment runs: the version
// table's (pkg/releases, its one home), which nodeup imports from an image
// tarball asset into containerd (pinned), so it is never pulled from a
// registry.
var CoreDNSImage = releases.Newest().CoreDNS.Ref

// Labels and annotations set on every object this package applies.
const (
	// ManagedByLabel marks the objects protokube applies; pruning lists
	// objects by it, so it never deletes an object it did not create.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "kopsnode-protokube"
	// HashAnnotation carries the hash of the wanted object, so an operator
	// can see which version of the manifests an object comes from.
	HashAnnotation = "kopsnode.io/manifest-hash"
	// corefileHashAnnotation on CoreDNS's pod template rolls the pods when
	// the Corefile changes.
	corefileHashAnnotation = "kopsnode.io/corefile-hash"
)

const (
	systemNamespace = "kube-system"
	coreDNSName     = "coredns"
	coreDNSReplicas = 2
	dnsAppLabel     = "kube-dns"
)

// Inputs is everything the manifests depend on.
type Inputs struct {
	// ClusterDomain is the cluster's DNS domain (kubelet.clusterDomain).
	ClusterDomain string
	// DNSIP is the ClusterIP of the kube-dns Service, the address kubelets
	// give pods as their resolver.
	DNSIP netip.Addr
	// Tokens are the kubelet TLS-bootstrap tokens that have not expired,
	// one Secret each (the current token and the ones a rotation left
	// valid); none leaves the Secrets out (the caller reports why).
	Tokens []bootstraptoken.Issued
}

// InputsFromNode takes the inputs from a (defaulted) node configuration:
// the DNS Service sits at kubelet.clusterDNS, which defaults to the tenth
// address of networking.serviceCIDR, so kubelets and the Service agree even
// when an operator sets clusterDNS. Errors name the field and the source.
func InputsFromNode(node *config.NodeConfig, source string) (Inputs, error) {
	s := node.Spec
	in := Inputs{ClusterDomain: s.Kubelet.ClusterDomain}
	if in.ClusterDomain == "" {
		in.ClusterDomain = config.DefaultClusterDomain
	}
	if s.Kubelet.ClusterDNS != "" {
		a, err := netip.ParseAddr(s.Kubelet.ClusterDNS)
		if err != nil {
			return Inputs{}, fmt.Errorf("%s: spec.kubelet.clusterDNS: %q is not an IP address", source, s.Kubelet.ClusterDNS)
		}
		in.DNSIP = a
	} else {
		a, err := s.Networking.ClusterDNSIP()
		if err != nil {
			return Inputs{}, fmt.Errorf("%s: spec.%w", source, err)
		}
		in.DNSIP = a
	}
	if p, err := netip.ParsePrefix(s.Networking.ServiceCIDR); err == nil && !p.Masked().Contains(in.DNSIP) {
		return Inputs{}, fmt.Errorf("%s: spec.kubelet.clusterDNS: %s is outside networking.serviceCIDR %s, so no Service can have it", source, in.DNSIP, p)
	}
	return in, nil
}

// Object is one manifest: a typed Kubernetes object and how to address it.
type Object struct {
	Obj runtime.Object
	// Resource is the object's API resource, for the dynamic client.
	Resource  schema.GroupVersionResource
	Namespace string
	Name      string
	Kind      string
	// Hash is the sha256 of the object's JSON without HashAnnotation.
	Hash string
	// JSON is the object as applied (with HashAnnotation).
	JSON []byte
}

// Key names the object in logs and status: Kind/namespace/name.
func (o Object) Key() string { return objectKey(o.Kind, o.Namespace, o.Name) }

func objectKey(kind, ns, name string) string {
	if ns == "" {
		return kind + "/" + name
	}
	return kind + "/" + ns + "/" + name
}

// resourceFor maps the kinds this package applies to their API resources;
// Prune lists exactly the kinds of managedKinds.
func resourceFor(kind string) (gvr schema.GroupVersionResource, namespaced, ok bool) {
	switch kind {
	case "Secret":
		return corev1.SchemeGroupVersion.WithResource("secrets"), true, true
	case "ServiceAccount":
		return corev1.SchemeGroupVersion.WithResource("serviceaccounts"), true, true
	case "ConfigMap":
		return corev1.SchemeGroupVersion.WithResource("configmaps"), true, true
	case "Service":
		return corev1.SchemeGroupVersion.WithResource("services"), true, true
	case "Deployment":
		return appsv1.SchemeGroupVersion.WithResource("deployments"), true, true
	case "ClusterRole":
		return rbacv1.SchemeGroupVersion.WithResource("clusterroles"), false, true
	case "ClusterRoleBinding":
		return rbacv1.SchemeGroupVersion.WithResource("clusterrolebindings"), false, true
	}
	return schema.GroupVersionResource{}, false, false
}

// managedKinds are the kinds this package applies, in a fixed order.
func managedKinds() []string {
	return []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Secret", "Service", "ServiceAccount"}
}

// Objects builds the system manifests from the inputs, in apply order
// (RBAC and configuration before the Deployment that uses them). It is pure.
func Objects(in Inputs) ([]Object, error) {
	if in.ClusterDomain == "" {
		return nil, fmt.Errorf("no cluster domain")
	}
	if !in.DNSIP.IsValid() {
		return nil, fmt.Errorf("no cluster DNS address")
	}
	var objs []runtime.Object
	for _, t := range in.Tokens {
		objs = append(objs, bootstrapTokenSecret(t))
	}
	objs = append(objs, nodeBindings()...)
	objs = append(objs, coreDNS(in)...)
	out := make([]Object, 0, len(objs))
	for _, o := range objs {
		obj, err := newObject(o)
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

// newObject labels the object, hashes it and records how to address it.
func newObject(o runtime.Object) (Object, error) {
	m, err := metaOf(o)
	if err != nil {
		return Object{}, err
	}
	kind := o.GetObjectKind().GroupVersionKind().Kind
	gvr, _, ok := resourceFor(kind)
	if !ok {
		return Object{}, fmt.Errorf("manifests: kind %q has no resource mapping", kind)
	}
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	m.Labels[ManagedByLabel] = ManagedByValue
	delete(m.Annotations, HashAnnotation)
	raw, err := json.Marshal(o)
	if err != nil {
		return Object{}, fmt.Errorf("encoding %s %s: %w", kind, m.Name, err)
	}
	sum := sha256.Sum256(raw)
	hash := hex.EncodeToString(sum[:])
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[HashAnnotation] = hash
	raw, err = json.Marshal(o)
	if err != nil {
		return Object{}, fmt.Errorf("encoding %s %s: %w", kind, m.Name, err)
	}
	return Object{Obj: o, Resource: gvr, Namespace: m.Namespace, Name: m.Name, Kind: kind, Hash: hash, JSON: raw}, nil
}

func metaOf(o runtime.Object) (*metav1.ObjectMeta, error) {
	type hasMeta interface{ GetObjectMeta() metav1.Object }
	if h, ok := o.(hasMeta); ok {
		if m, ok := h.GetObjectMeta().(*metav1.ObjectMeta); ok {
			return m, nil
		}
	}
	return nil, fmt.Errorf("manifests: %T has no object metadata", o)
}

func typeMeta(gv schema.GroupVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: gv.String(), Kind: kind}
}

// bootstrapTokenSecret is the token's Secret in the format the API server's
// bootstrap-token authenticator reads: it authenticates kubelets presenting
// "<id>.<secret>" as system:bootstrap:<id> in system:bootstrappers and
// bootstraptoken.ExtraGroup. With an expiry, the authenticator refuses the
// token after it and the controller manager's tokencleaner deletes the
// Secret.
func bootstrapTokenSecret(i bootstraptoken.Issued) *corev1.Secret {
	t := i.Token
	s := &corev1.Secret{
		TypeMeta:   typeMeta(corev1.SchemeGroupVersion, "Secret"),
		ObjectMeta: metav1.ObjectMeta{Name: bootstraptoken.SecretName(t), Namespace: systemNamespace},
		Type:       corev1.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			"description":                    []byte("kubelet TLS bootstrap token of the cluster's nodes (from the state store, applied by protokube)"),
			"token-id":                       []byte(t.ID),
			"token-secret":                   []byte(t.Secret),
			"usage-bootstrap-authentication": []byte("true"),
			"auth-extra-groups":              []byte(bootstraptoken.ExtraGroup),
		},
	}
	if !i.Expires.IsZero() {
		s.Data["expiration"] = []byte(i.Expires.UTC().Format(time.RFC3339))
	}
	return s
}

func clusterRoleBinding(name, role string, subjects ...rbacv1.Subject) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   typeMeta(rbacv1.SchemeGroupVersion, "ClusterRoleBinding"),
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   subjects,
	}
}

func group(name string) rbacv1.Subject {
	return rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: name}
}

// nodeBindings let a bootstrapping kubelet create a CSR that the controller
// manager approves automatically, let a node renew its own certificate, and
// give kube-proxy (which runs with the kubelet's credentials) its role.
func nodeBindings() []runtime.Object {
	return []runtime.Object{
		clusterRoleBinding("kopsnode:node-bootstrapper", "system:node-bootstrapper", group(bootstraptoken.ExtraGroup)),
		clusterRoleBinding("kopsnode:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", group(bootstraptoken.ExtraGroup)),
		clusterRoleBinding("kopsnode:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", group("system:nodes")),
		clusterRoleBinding("kopsnode:node-proxier", "system:node-proxier", group("system:nodes")),
	}
}

// Corefile returns CoreDNS's configuration: cluster names from the API,
// everything else forwarded to the node's resolvers (the pods run with
// dnsPolicy Default, so /etc/resolv.conf is the node's).
func Corefile(clusterDomain string) string {
	return `.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes ` + clusterDomain + ` in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
        max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
`
}

func coreDNS(in Inputs) []runtime.Object {
	labels := map[string]string{"k8s-app": dnsAppLabel}
	corefile := Corefile(in.ClusterDomain)
	sum := sha256.Sum256([]byte(corefile))
	meta := func(name string, namespaced bool) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Name: name, Labels: map[string]string{"k8s-app": dnsAppLabel}}
		if namespaced {
			m.Namespace = systemNamespace
		}
		return m
	}
	sa := &corev1.ServiceAccount{TypeMeta: typeMeta(corev1.SchemeGroupVersion, "ServiceAccount"), ObjectMeta: meta(coreDNSName, true)}
	role := &rbacv1.ClusterRole{
		TypeMeta:   typeMeta(rbacv1.SchemeGroupVersion, "ClusterRole"),
		ObjectMeta: meta("system:coredns", false),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	binding := clusterRoleBinding("system:coredns", "system:coredns",
		rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: coreDNSName, Namespace: systemNamespace})
	binding.Labels = map[string]string{"k8s-app": dnsAppLabel}
	cm := &corev1.ConfigMap{
		TypeMeta:   typeMeta(corev1.SchemeGroupVersion, "ConfigMap"),
		ObjectMeta: meta(coreDNSName, true),
		Data:       map[string]string{"Corefile": corefile},
	}
	replicas := int32(coreDNSReplicas)
	maxUnavailable := intstr.FromInt32(1)
	falseV, trueV := false, true
	probe := func(path string, port int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(port), Scheme: corev1.URISchemeHTTP}}}
	}
	liveness := probe("/health", 8080)
	liveness.InitialDelaySeconds, liveness.TimeoutSeconds, liveness.FailureThreshold = 60, 5, 5
	dep := &appsv1.Deployment{
		TypeMeta:   typeMeta(appsv1.SchemeGroupVersion, "Deployment"),
		ObjectMeta: meta(coreDNSName, true),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{
				Type:          appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &maxUnavailable},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"k8s-app": dnsAppLabel},
					Annotations: map[string]string{corefileHashAnnotation: hex.EncodeToString(sum[:])},
				},
				Spec: corev1.PodSpec{
					PriorityClassName:  "system-cluster-critical",
					ServiceAccountName: coreDNSName,
					DNSPolicy:          corev1.DNSDefault,
					NodeSelector:       map[string]string{corev1.LabelOSStable: "linux"},
					Tolerations: []corev1.Toleration{
						{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists},
						{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule},
					},
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
							Weight: 100,
							PodAffinityTerm: corev1.PodAffinityTerm{
								LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
								TopologyKey:   corev1.LabelHostname,
							},
						}},
					}},
					Containers: []corev1.Container{{
						Name:            coreDNSName,
						Image:           CoreDNSImage,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args:            []string{"-conf", "/etc/coredns/Corefile"},
						Resources: corev1.ResourceRequirements{
							Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("170Mi")},
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("70Mi")},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true}},
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: &falseV,
							ReadOnlyRootFilesystem:   &trueV,
							Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"ALL"}},
						},
						LivenessProbe:  liveness,
						ReadinessProbe: probe("/ready", 8181),
					}},
					Volumes: []corev1.Volume{{
						Name: "config-volume",
						VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: coreDNSName},
							Items:                []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}},
						}},
					}},
				},
			},
		},
	}
	svc := &corev1.Service{
		TypeMeta: typeMeta(corev1.SchemeGroupVersion, "Service"),
		ObjectMeta: metav1.ObjectMeta{
			Name: "kube-dns", Namespace: systemNamespace,
			Labels:      map[string]string{"k8s-app": dnsAppLabel, "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"},
			Annotations: map[string]string{"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
		},
		Spec: corev1.ServiceSpec{
			Selector:   labels,
			ClusterIP:  in.DNSIP.String(),
			ClusterIPs: []string{in.DNSIP.String()},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: corev1.ProtocolTCP},
				{Name: "metrics", Port: 9153, TargetPort: intstr.FromInt32(9153), Protocol: corev1.ProtocolTCP},
			},
		},
	}
	return []runtime.Object{sa, role, binding, cm, dep, svc}
}
