package manifests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store"
)

// Results of applying one object.
const (
	ResultCreated   = "created"
	ResultUpdated   = "updated"
	ResultUnchanged = "unchanged"
	// ResultRecreated: the object had to be deleted and created again
	// because a field that changed is immutable (a Service's ClusterIP).
	ResultRecreated = "recreated"
	ResultError     = "error"
)

// Status is the document served at /status and printed by
// `protokube manifests-status`.
type Status struct {
	Cluster   string `json:"cluster,omitempty"`
	APIServer string `json:"apiServer,omitempty"`
	// APIReady: the API server answered /readyz in the last pass.
	APIReady bool `json:"apiReady"`
	// Ready: the last pass applied every wanted object and read every input.
	Ready bool `json:"ready"`
	// Error says why the last pass applied nothing (configuration
	// unreadable, API server not answering).
	Error string `json:"error,omitempty"`
	// InputErrors are inputs the last pass could not read; the objects
	// that need them were left as they are (not applied, not pruned).
	InputErrors []string  `json:"inputErrors,omitempty"`
	Passes      int       `json:"passes"`
	LastPass    time.Time `json:"lastPass,omitzero"`
	// LastSuccess is the end of the last pass with Ready.
	LastSuccess time.Time      `json:"lastSuccess,omitzero"`
	Objects     []ObjectStatus `json:"objects"`
	// Pruned are the objects deleted because they are no longer wanted
	// (for example the Secret of an expired bootstrap token), newest last.
	Pruned []PrunedObject `json:"pruned,omitempty"`
	// BootstrapToken is the state of the node bootstrap tokens after the
	// last pass that read them.
	BootstrapToken *TokenStatus `json:"bootstrapToken,omitempty"`
}

// TokenStatus describes the node bootstrap tokens (ids only, never a
// secret).
type TokenStatus struct {
	// Current is the id of the token joining machines use.
	Current string    `json:"current"`
	Expires time.Time `json:"expires,omitzero"`
	// Valid are the ids of the tokens whose Secrets are applied: the
	// current one and those a rotation left valid until they expire.
	Valid []string `json:"valid"`
	// Decision is the last rotation decision, with its reason.
	Decision string `json:"decision,omitempty"`
	// LastRotation is when this process last replaced the token.
	LastRotation time.Time `json:"lastRotation,omitzero"`
}

// ObjectStatus is the state of one wanted object.
type ObjectStatus struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Hash identifies the wanted content (HashAnnotation on the object).
	Hash string `json:"hash"`
	// Result is the last apply's outcome: created, updated (by a changed
	// manifest, or restoring a change made by hand), unchanged, recreated
	// or error.
	Result          string `json:"result"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Changes counts the applies that changed the object.
	Changes     int       `json:"changes"`
	LastApplied time.Time `json:"lastApplied,omitzero"`
	LastChanged time.Time `json:"lastChanged,omitzero"`
	Error       string    `json:"error,omitempty"`
}

// Key names the object: Kind/namespace/name.
func (o ObjectStatus) Key() string { return objectKey(o.Kind, o.Namespace, o.Name) }

// PrunedObject is an object deleted because no manifest wants it any more.
type PrunedObject struct {
	Kind      string    `json:"kind"`
	Namespace string    `json:"namespace,omitempty"`
	Name      string    `json:"name"`
	At        time.Time `json:"at"`
}

const maxPruned = 20

// Deps are the parts a Reconciler uses; nil fields get the real ones.
type Deps struct {
	Logger *slog.Logger
	// Store holds the bootstrap token. Required.
	Store store.Store
	// Registry receives the metrics; nil: a new one.
	Registry *prometheus.Registry
	// Now is the clock of the status times and of the bootstrap tokens'
	// expiry and rotation; nil: time.Now.
	Now func() time.Time
}

// Reconciler applies the manifests. Pass is called from one goroutine at a
// time; Status from any.
type Reconciler struct {
	cfg Config
	log *slog.Logger
	st  store.Store
	now func() time.Time

	mu         sync.Mutex // guards status, lastWait, lastWaitOK
	status     Status
	lastWait   time.Time // last "waiting for the API server" log line
	lastWaitOK bool      // whether the API answered in the previous pass

	apiReady   prometheus.Gauge
	applies    *prometheus.CounterVec
	objectErrs prometheus.Gauge
	pruned     prometheus.Counter
	lastOK     prometheus.Gauge
}

// NewReconciler checks its dependencies and registers the metrics.
func NewReconciler(cfg Config, deps Deps) (*Reconciler, error) {
	if deps.Store == nil {
		return nil, errors.New("manifests: no state store")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	r := &Reconciler{
		cfg: cfg, log: log, st: deps.Store, now: now,
		status: Status{Objects: []ObjectStatus{}},
		apiReady: prometheus.NewGauge(prometheus.GaugeOpts{Name: "protokube_manifests_api_ready",
			Help: "1 when the API server answered /readyz in the last pass."}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protokube_manifests_applies_total",
			Help: "Server-side applies of system manifests, by kind and result (created, updated, unchanged, recreated, error)."}, []string{"kind", "result"}),
		objectErrs: prometheus.NewGauge(prometheus.GaugeOpts{Name: "protokube_manifests_object_errors",
			Help: "Wanted objects whose last apply failed."}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "protokube_manifests_pruned_total",
			Help: "Objects deleted because no manifest wants them any more."}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "protokube_manifests_last_success_timestamp_seconds",
			Help: "Unix time of the end of the last pass that applied every object."}),
	}
	for _, c := range []prometheus.Collector{r.apiReady, r.applies, r.objectErrs, r.pruned, r.lastOK} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering manifests metrics: %w", err)
		}
	}
	return r, nil
}

// desired reads the configuration copy, creates or rotates the bootstrap
// token, and builds the objects. inputErrs lists inputs that could not be
// read (the objects are built without them); err is fatal to the pass.
func (r *Reconciler) desired(ctx context.Context) (cluster string, objs []Object, inputErrs []string, err error) {
	node, err := config.LoadNodeConfigFile(r.cfg.ConfigFile)
	if err != nil {
		return "", nil, nil, err
	}
	cluster = node.Spec.ClusterName
	in, err := InputsFromNode(node, r.cfg.ConfigFile)
	if err != nil {
		return cluster, nil, nil, err
	}
	tokens, err := r.tokens(ctx, cluster)
	if err != nil {
		inputErrs = append(inputErrs, "node bootstrap token: "+err.Error())
	} else {
		in.Tokens = tokens
	}
	objs, err = Objects(in)
	return cluster, objs, inputErrs, err
}

// tokens creates the cluster's bootstrap token when there is none and
// rotates it when its life is running out, then returns the tokens whose
// Secrets are wanted: every one that has not expired. Every control-plane
// node does this; the store's conditional writes let one of them win.
func (r *Reconciler) tokens(ctx context.Context, cluster string) ([]bootstraptoken.Issued, error) {
	res, err := bootstraptoken.Issuer{Store: r.st, Cluster: cluster, Policy: r.cfg.TokenPolicy(), Now: r.now}.Rotate(ctx)
	if err != nil {
		return nil, err
	}
	now := r.now()
	url := store.JoinURL(r.st.URL(), bootstraptoken.Key(cluster))
	cur := res.Tokens.Current
	switch {
	case res.Created:
		r.log.Info("created the node bootstrap token", "token", cur, "url", url)
	case res.Rotated:
		// The old token is listed while it is valid (an expired one is
		// dropped by the rotation).
		r.log.Info("rotated the node bootstrap token; the old one stays valid until it expires",
			"token", cur, "reason", res.Decision.Reason, "valid", len(res.Tokens.Valid(now)), "url", url)
	case res.Decision.Rotate:
		r.log.Info("another control-plane node rotated the node bootstrap token first", "token", cur, "url", url)
	}
	valid := res.Tokens.Valid(now)
	ts := &TokenStatus{Current: cur.Token.ID, Expires: cur.Expires, Decision: res.Decision.Reason, Valid: []string{}}
	for _, i := range valid {
		ts.Valid = append(ts.Valid, i.Token.ID)
	}
	r.mu.Lock()
	if prev := r.status.BootstrapToken; prev != nil {
		ts.LastRotation = prev.LastRotation
	}
	if res.Rotated {
		ts.LastRotation = now
	}
	r.status.BootstrapToken = ts
	r.mu.Unlock()
	return valid, nil
}

// tokenInStore reports whether the Secret name belongs to a token the store
// holds now and that has not expired, or whether the store cannot tell
// (then the Secret is kept too).
func (r *Reconciler) tokenInStore(ctx context.Context, cluster, secret string) bool {
	if !strings.HasPrefix(secret, "bootstrap-token-") {
		return false
	}
	ts, _, err := bootstraptoken.ReadTokens(ctx, r.st, cluster)
	if err != nil {
		return true
	}
	for _, i := range ts.Valid(r.now()) {
		if bootstraptoken.SecretName(i.Token) == secret {
			return true
		}
	}
	return false
}

// client loads the kubeconfig (every pass, so a rotated admin certificate
// is picked up) and checks that the API server is ready.
func (r *Reconciler) client(ctx context.Context) (dynamic.Interface, string, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", r.cfg.Kubeconfig)
	if err != nil {
		return nil, "", fmt.Errorf("loading kubeconfig %s: %w", r.cfg.Kubeconfig, err)
	}
	rc = rest.CopyConfig(rc)
	rc.UserAgent = FieldManager
	rc.Timeout = 30 * time.Second
	if err := CheckReady(ctx, rc); err != nil {
		return nil, rc.Host, err
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, rc.Host, fmt.Errorf("API client for %s: %w", rc.Host, err)
	}
	return dc, rc.Host, nil
}

// CheckReady asks the API server's /readyz, within 5 seconds.
func CheckReady(ctx context.Context, rc *rest.Config) error {
	rc = rest.CopyConfig(rc)
	rc.Timeout = 5 * time.Second
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return fmt.Errorf("API client for %s: %w", rc.Host, err)
	}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := strings.TrimSuffix(rc.Host, "/") + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("API server %s does not answer: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("API server %s is not ready: %s", url, resp.Status)
	}
	return nil
}

// Pass reads the inputs, waits for nothing, applies every object once and
// prunes objects no longer wanted; it returns the status after it.
func (r *Reconciler) Pass(ctx context.Context) Status {
	start := r.now()
	cluster, objs, inputErrs, err := r.desired(ctx)
	if err != nil {
		r.log.Error("cannot build the system manifests", "err", err)
		return r.finish(start, cluster, "", false, err, inputErrs, nil)
	}
	dc, host, err := r.client(ctx)
	if err != nil {
		r.logWait(start, host, err)
		return r.finish(start, cluster, host, false, err, inputErrs, nil)
	}
	r.mu.Lock()
	if !r.lastWaitOK {
		r.log.Info("the API server answers; applying the system manifests", "apiServer", host, "objects", len(objs))
	}
	r.lastWaitOK = true
	r.mu.Unlock()

	results := make([]applied, 0, len(objs))
	for _, o := range objs {
		if ctx.Err() != nil {
			// Shutting down: a half pass is not a result.
			return r.Status()
		}
		res, rv, err := r.apply(ctx, dc, o)
		results = append(results, applied{obj: o, result: res, rv: rv, err: err})
		r.applies.WithLabelValues(o.Kind, res).Inc()
		switch {
		case err != nil:
			r.log.Error("applying a system manifest failed; will retry", "object", o.Key(), "err", err)
		case res != ResultUnchanged:
			r.log.Info("applied a system manifest", "object", o.Key(), "result", res, "hash", o.Hash[:12])
		}
	}
	if ctx.Err() != nil {
		return r.Status()
	}
	if len(inputErrs) == 0 {
		r.prune(ctx, dc, cluster, objs)
	} else {
		r.log.Warn("not every input could be read; applied the rest and pruned nothing", "errors", inputErrs)
	}
	return r.finish(start, cluster, host, true, nil, inputErrs, results)
}

type applied struct {
	obj    Object
	result string
	rv     string
	err    error
}

// logWait logs that the API server does not answer: on the first failure
// after it answered, then at most once a minute.
func (r *Reconciler) logWait(now time.Time, host string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastWaitOK || r.lastWait.IsZero() || now.Sub(r.lastWait) >= time.Minute {
		r.log.Info("waiting for the API server", "apiServer", host, "kubeconfig", r.cfg.Kubeconfig, "err", err)
		r.lastWait = now
	}
	r.lastWaitOK = false
}

// apply server-side applies one object. It reads the object first so that
// it can tell created, updated (the manifest changed, or someone changed a
// field we own) and unchanged apart by resourceVersion.
func (r *Reconciler) apply(ctx context.Context, dc dynamic.Interface, o Object) (string, string, error) {
	ri := resourceClient(dc, o)
	before, err := ri.Get(ctx, o.Name, metav1.GetOptions{})
	notFound := apierrors.IsNotFound(err)
	if err != nil && !notFound {
		return ResultError, "", fmt.Errorf("reading %s: %w", o.Key(), err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(o.JSON); err != nil {
		return ResultError, "", fmt.Errorf("decoding %s: %w", o.Key(), err)
	}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	after, err := ri.Apply(ctx, o.Name, u, opts)
	if err != nil && !notFound && o.Kind == "Service" && apierrors.IsInvalid(err) {
		// A Service's ClusterIP cannot change in place: replace it.
		r.log.Info("replacing a Service whose immutable fields changed", "object", o.Key(), "err", err)
		uid := before.GetUID()
		if derr := ri.Delete(ctx, o.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); derr != nil && !apierrors.IsNotFound(derr) {
			return ResultError, "", fmt.Errorf("deleting %s to recreate it: %w (apply: %v)", o.Key(), derr, err)
		}
		after, err = ri.Apply(ctx, o.Name, u, opts)
		if err != nil {
			return ResultError, "", fmt.Errorf("recreating %s: %w", o.Key(), err)
		}
		return ResultRecreated, after.GetResourceVersion(), nil
	}
	if err != nil {
		return ResultError, "", fmt.Errorf("applying %s: %w", o.Key(), err)
	}
	switch {
	case notFound:
		return ResultCreated, after.GetResourceVersion(), nil
	case before.GetResourceVersion() != after.GetResourceVersion():
		return ResultUpdated, after.GetResourceVersion(), nil
	}
	return ResultUnchanged, after.GetResourceVersion(), nil
}

func resourceClient(dc dynamic.Interface, o Object) dynamic.ResourceInterface {
	if o.Namespace == "" {
		return dc.Resource(o.Resource)
	}
	return dc.Resource(o.Resource).Namespace(o.Namespace)
}

// prune deletes the objects carrying ManagedByLabel that no manifest wants
// any more. It lists only the kinds this package applies.
func (r *Reconciler) prune(ctx context.Context, dc dynamic.Interface, cluster string, objs []Object) {
	want := map[string]bool{}
	for _, o := range objs {
		want[o.Key()] = true
	}
	sel := metav1.ListOptions{LabelSelector: ManagedByLabel + "=" + ManagedByValue}
	for _, kind := range managedKinds() {
		gvr, _, _ := resourceFor(kind)
		list, err := dc.Resource(gvr).List(ctx, sel)
		if err != nil {
			r.log.Error("listing applied objects to prune failed", "kind", kind, "err", err)
			continue
		}
		for _, item := range list.Items {
			key := objectKey(kind, item.GetNamespace(), item.GetName())
			if want[key] {
				continue
			}
			if kind == "Secret" && r.tokenInStore(ctx, cluster, item.GetName()) {
				// Another control-plane node rotated the token after this
				// pass read the store: its Secret is wanted.
				continue
			}
			uid := item.GetUID()
			ri := dc.Resource(gvr).Namespace(item.GetNamespace())
			err := ri.Delete(ctx, item.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			if err != nil && !apierrors.IsNotFound(err) {
				r.log.Error("pruning an object no manifest wants failed", "object", key, "err", err)
				continue
			}
			r.log.Info("pruned an object no manifest wants any more", "object", key)
			r.pruned.Inc()
			r.mu.Lock()
			r.status.Pruned = append(r.status.Pruned, PrunedObject{Kind: kind, Namespace: item.GetNamespace(), Name: item.GetName(), At: r.now()})
			if n := len(r.status.Pruned); n > maxPruned {
				r.status.Pruned = append([]PrunedObject(nil), r.status.Pruned[n-maxPruned:]...)
			}
			r.mu.Unlock()
		}
	}
}

// finish records a pass in the status and the metrics.
func (r *Reconciler) finish(start time.Time, cluster, host string, apiReady bool, passErr error, inputErrs []string, results []applied) Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &r.status
	st.Passes++
	st.LastPass = r.now()
	if cluster != "" {
		st.Cluster = cluster
	}
	if host != "" {
		st.APIServer = host
	}
	st.APIReady = apiReady
	st.InputErrors = inputErrs
	st.Error = ""
	if passErr != nil {
		st.Error = passErr.Error()
	}
	r.apiReady.Set(boolGauge(apiReady))
	if passErr != nil {
		// Nothing was applied: keep the objects' last known state.
		st.Ready = false
		return r.copyStatusLocked()
	}
	prev := map[string]ObjectStatus{}
	for _, o := range st.Objects {
		prev[o.Key()] = o
	}
	objs := make([]ObjectStatus, 0, len(results))
	errCount := 0
	for _, a := range results {
		s := prev[a.obj.Key()]
		s.Kind, s.Namespace, s.Name, s.Hash, s.Result = a.obj.Kind, a.obj.Namespace, a.obj.Name, a.obj.Hash, a.result
		s.Error = ""
		if a.err != nil {
			s.Error = a.err.Error()
			errCount++
		} else {
			s.ResourceVersion = a.rv
			s.LastApplied = start
			if a.result != ResultUnchanged {
				s.Changes++
				s.LastChanged = start
			}
		}
		objs = append(objs, s)
	}
	st.Objects = objs
	st.Ready = errCount == 0 && len(inputErrs) == 0
	r.objectErrs.Set(float64(errCount))
	if st.Ready {
		st.LastSuccess = st.LastPass
		r.lastOK.Set(float64(st.LastPass.Unix()))
	}
	return r.copyStatusLocked()
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (r *Reconciler) copyStatusLocked() Status {
	st := r.status
	st.Objects = append([]ObjectStatus{}, st.Objects...)
	st.Pruned = append([]PrunedObject(nil), st.Pruned...)
	st.InputErrors = append([]string(nil), st.InputErrors...)
	if st.BootstrapToken != nil {
		ts := *st.BootstrapToken
		ts.Valid = append([]string{}, ts.Valid...)
		st.BootstrapToken = &ts
	}
	return st
}

// Status returns a copy of the current state.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.copyStatusLocked()
}

// health is nil when the last pass applied everything, else says why not.
func (r *Reconciler) health(context.Context) error {
	st := r.Status()
	if st.Passes == 0 {
		return errors.New("no pass yet")
	}
	var bad []string
	if st.Error != "" {
		bad = append(bad, st.Error)
	}
	bad = append(bad, st.InputErrors...)
	for _, o := range st.Objects {
		if o.Error != "" {
			bad = append(bad, o.Key()+": "+o.Error)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}
