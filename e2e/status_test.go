package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/nodecheck"
)

// nodeupStatus is `nodeup status -o json`: the last run and the node checks.
type nodeupStatus struct {
	Result string           `json:"result"`
	Checks nodecheck.Report `json:"checks"`
}

// checkNodeupStatus asserts that `nodeup status` on a joined worker and a
// control-plane machine answers "why has this node not joined" with
// "it has": kubelet and containerd active, the API name resolves and the
// API server answers, the kubelet's client certificate issued (by CSR on
// the worker, by nodeup on the control plane), and the Node Ready.
func (c *clusterFixture) checkNodeupStatus(worker, cp *clusterMachine) {
	t := c.t
	t.Helper()
	for _, m := range []struct {
		cm       *clusterMachine
		certPath string // "" for any path under the kubelet's pki directory
	}{{worker, ""}, {cp, model.KubeletKubeconfig}} {
		waitFor(t, "nodeup status on "+m.cm.Name()+" to report the node joined", 2*time.Minute, func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := m.cm.Exec(ctx, "/usr/local/bin/nodeup", "status", "-o", "json")
			if err != nil {
				return false, fmt.Sprintf("%v: %s", err, out)
			}
			var st nodeupStatus
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				return false, fmt.Sprintf("decoding: %v: %s", err, out)
			}
			if problems := joinedProblems(st, m.cm.Name(), m.certPath); len(problems) > 0 {
				return false, strings.Join(problems, "; ") + "\n" + out
			}
			return true, ""
		})
		human, _ := m.cm.Exec(context.Background(), "/usr/local/bin/nodeup", "status")
		t.Logf("nodeup status on %s:\n%s", m.cm.Name(), human)
	}
}

// joinedProblems lists what in a joined node's status is not as it must
// be.
func joinedProblems(st nodeupStatus, node, certPath string) []string {
	var p []string
	if st.Result != "converged" {
		p = append(p, "result "+st.Result)
	}
	units := map[string]nodecheck.Unit{}
	for _, u := range st.Checks.Units {
		units[u.Name] = u
	}
	for _, n := range []string{"containerd.service", "kubelet.service"} {
		if u := units[n]; u.ActiveState != "active" || u.SubState != "running" || u.Since.IsZero() {
			p = append(p, fmt.Sprintf("unit %s: %+v", n, u))
		}
	}
	if a := st.Checks.API; !a.Resolves || len(a.Addresses) == 0 || !a.Answers || !a.Ready {
		p = append(p, fmt.Sprintf("api %+v", a))
	}
	cert := st.Checks.Certificate
	pathOK := cert.Path == certPath || (certPath == "" && strings.HasPrefix(cert.Path, "/var/lib/kubelet/pki/"))
	if !cert.Issued || !pathOK || !strings.Contains(cert.Subject, "CN=system:node:"+node) || cert.Expired || cert.Error != "" {
		p = append(p, fmt.Sprintf("certificate %+v", cert))
	}
	if n := st.Checks.Node; n.Name != node || n.Ready != "True" || n.Error != "" {
		p = append(p, fmt.Sprintf("node %+v", n))
	}
	return p
}
