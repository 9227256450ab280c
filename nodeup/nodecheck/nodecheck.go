// Package nodecheck answers "why has this node not joined the cluster":
// the state of the kubelet and containerd units, whether the API name
// resolves and the API server answers, whether the kubelet's client
// certificate was issued (and, when not, what became of the node's CSRs),
// and the Node's Ready condition. Each check takes its seams (file reader,
// resolver, unit-state reader, clock; API reads go through client-go), is
// bounded by a timeout, and never fails: a check that cannot tell says
// "unknown" and why. `nodeup status` renders the Report.
package nodecheck

import (
	"context"
	"sync"
	"time"
)

// Report is every check's result.
type Report struct {
	Units       []Unit      `json:"units"`
	API         API         `json:"api"`
	Certificate Certificate `json:"kubeletCertificate"`
	Node        Node        `json:"node"`
}

// Unit is a systemd unit's state. Unknown says why it could not be read.
type Unit struct {
	Name        string `json:"name"`
	LoadState   string `json:"loadState,omitempty"`
	ActiveState string `json:"activeState,omitempty"`
	SubState    string `json:"subState,omitempty"`
	// Result is the service's last result ("success", "exit-code", ...).
	Result string `json:"result,omitempty"`
	// Since is when ActiveState or SubState last changed.
	Since   time.Time `json:"since,omitzero"`
	Unknown string    `json:"unknown,omitempty"`
}

// API is whether the API name resolves and the API server answers
// GET /readyz (anonymously, verified with the cluster CA from the node).
// Error says what failed; Unknown says why nothing was checked.
type API struct {
	// Server is the API server URL, read from the kubeconfig named by From.
	Server    string   `json:"server,omitempty"`
	From      string   `json:"from,omitempty"`
	Host      string   `json:"host,omitempty"`
	Resolves  bool     `json:"resolves"`
	Addresses []string `json:"addresses,omitempty"`
	// Answers says an API server answered over TLS verified with the
	// cluster CA; Ready says /readyz returned 200.
	Answers bool `json:"answers"`
	Ready   bool `json:"ready"`
	// Readyz is the HTTP status and the start of the body of GET /readyz.
	Readyz  string `json:"readyz,omitempty"`
	Error   string `json:"error,omitempty"`
	Unknown string `json:"unknown,omitempty"`
}

// Certificate is the kubelet's client certificate. When it is not issued
// yet, CSRs are this node's certificate signing requests as the bootstrap
// token sees them.
type Certificate struct {
	Issued bool `json:"issued"`
	// Path is the file the certificate was read from (the kubelet
	// kubeconfig itself when the certificate is embedded in it).
	Path      string    `json:"path,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	Expired   bool      `json:"expired,omitempty"`
	// BootstrapToken is the token the CSRs were read with.
	BootstrapToken *Token `json:"bootstrapToken,omitempty"`
	CSRs           []CSR  `json:"csrs,omitempty"`
	Error          string `json:"error,omitempty"`
	Unknown        string `json:"unknown,omitempty"`
}

// Token is a bootstrap token, by its public id only.
type Token struct {
	ID string `json:"id"`
	// Source is where the token came from: its state store URL.
	Source string `json:"source,omitempty"`
	// Rejected says the API server answered 401 to it.
	Rejected bool `json:"rejected,omitempty"`
}

// CSR states.
const (
	CSRPending  = "pending"
	CSRApproved = "approved" // approved, certificate not issued yet
	CSRIssued   = "issued"
	CSRDenied   = "denied"
	CSRFailed   = "failed"
)

// CSR is one of the node's certificate signing requests.
type CSR struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Requestor is the user that created it (system:bootstrap:<token id>).
	Requestor string `json:"requestor,omitempty"`
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"`
	Message   string `json:"message,omitempty"`
}

// Node is the Node object's Ready condition, read with the kubelet's own
// credentials.
type Node struct {
	Name string `json:"name,omitempty"`
	// Ready is the condition's status: "True", "False" or "Unknown".
	Ready          string    `json:"ready,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	Message        string    `json:"message,omitempty"`
	LastTransition time.Time `json:"lastTransition,omitzero"`
	Error          string    `json:"error,omitempty"`
	Unknown        string    `json:"unknown,omitempty"`
}

// FileReader reads a file of the node by its absolute path.
type FileReader interface {
	ReadFile(name string) ([]byte, error)
}

// Resolver resolves a host name to addresses (net.Resolver fits).
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Paths are the node files the checks read.
type Paths struct {
	// KubeletKubeconfig is the kubelet's kubeconfig: written by nodeup on
	// control-plane nodes, by the kubelet once its CSR is issued elsewhere.
	KubeletKubeconfig string
	// BootstrapKubeconfig holds the bootstrap token on nodes that join by
	// TLS bootstrap.
	BootstrapKubeconfig string
	// CAFile is the cluster CA certificate on the node, used when a
	// kubeconfig carries none.
	CAFile string
}

// DefaultTimeout bounds each check.
const DefaultTimeout = 3 * time.Second

// Inputs are Run's seams and settings.
type Inputs struct {
	Files    FileReader
	Resolver Resolver
	Units    UnitReader
	// UnitNames are the units to report (kubelet, containerd).
	UnitNames []string
	Paths     Paths
	// NodeName is the name the kubelet registers under; its CSRs carry
	// CN system:node:<NodeName>.
	NodeName string
	// TokenSource names where the bootstrap token came from (its store
	// URL), for messages.
	TokenSource string
	// Timeout bounds each check (default DefaultTimeout).
	Timeout time.Duration
	Now     func() time.Time
}

// Run runs every check: the units beside the API chain (resolve, readyz,
// then certificate requests and the Node through the API), each bounded by
// in.Timeout. It never fails; what it cannot tell is reported as unknown.
func Run(ctx context.Context, in Inputs) Report {
	if in.Timeout <= 0 {
		in.Timeout = DefaultTimeout
	}
	if in.Now == nil {
		in.Now = time.Now
	}
	var r Report
	var wg sync.WaitGroup
	wg.Go(func() { r.Units = CheckUnits(ctx, in.Units, in.UnitNames, in.Timeout) })

	kubelet, kubeletErr := LoadKubeconfig(in.Files, in.Paths.KubeletKubeconfig)
	boot, bootErr := LoadKubeconfig(in.Files, in.Paths.BootstrapKubeconfig)
	r.Certificate = CheckCertificate(kubelet, kubeletErr, in.Paths.KubeletKubeconfig, in.Now())

	// The kubelet's kubeconfig is what the kubelet talks with once it has
	// joined; before that, the bootstrap kubeconfig.
	apiFrom := kubelet
	if apiFrom == nil {
		apiFrom = boot
	}
	var conn *Conn
	if apiFrom == nil {
		r.API.Unknown = noKubeconfig(kubeletErr, bootErr)
	} else {
		ca := apiFrom.CAPEM
		if len(ca) == 0 && in.Paths.CAFile != "" {
			ca, _ = in.Files.ReadFile(in.Paths.CAFile)
		}
		r.API, conn = CheckAPI(ctx, in.Resolver, apiFrom.Server, ca, in.Timeout)
		r.API.From = apiFrom.Path
	}
	var why string
	switch {
	case r.API.Unknown != "":
		why = "the API server was not checked: " + r.API.Unknown
	case r.API.Host != "" && !r.API.Resolves:
		why = "the API name does not resolve"
	case !r.API.Answers:
		why = "the API server does not answer"
	}

	switch {
	case r.Certificate.Issued || r.Certificate.Error != "":
	case boot == nil:
		r.Certificate.Unknown = bootstrapUnknown(in.Paths.BootstrapKubeconfig, bootErr)
	case why != "":
		r.Certificate.Unknown = "certificate requests not read: " + why
	default:
		r.Certificate = checkCSRsWith(ctx, conn, boot, in, r.Certificate)
	}

	switch {
	case kubelet == nil || !r.Certificate.Issued:
		r.Node.Unknown = "not read: the kubelet has no client certificate yet"
		if r.Certificate.Error != "" {
			r.Node.Unknown = "not read: " + r.Certificate.Error
		}
	case why != "":
		r.Node.Unknown = "not read: " + why
	default:
		r.Node = checkNodeWith(ctx, conn, kubelet, in)
	}
	wg.Wait()
	return r
}

func checkCSRsWith(ctx context.Context, conn *Conn, boot *Kubeconfig, in Inputs, c Certificate) Certificate {
	tok, err := BootstrapTokenOf(boot, in.TokenSource)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	cs, err := conn.Client(boot)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	cctx, cancel := context.WithTimeout(ctx, in.Timeout)
	defer cancel()
	CheckCSRs(cctx, cs, in.NodeName, tok, &c)
	return c
}

func checkNodeWith(ctx context.Context, conn *Conn, kubelet *Kubeconfig, in Inputs) Node {
	name := nodeNameOf(kubelet, in.NodeName)
	cs, err := conn.Client(kubelet)
	if err != nil {
		return Node{Name: name, Error: err.Error()}
	}
	nctx, cancel := context.WithTimeout(ctx, in.Timeout)
	defer cancel()
	return CheckNode(nctx, cs, name)
}
