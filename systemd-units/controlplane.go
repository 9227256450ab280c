package units

import "strings"

// Binary paths of the Kubernetes control plane, installed by nodeup on
// control-plane nodes.
const (
	KubeAPIServerBin         = "/usr/local/bin/kube-apiserver"
	KubeControllerManagerBin = "/usr/local/bin/kube-controller-manager"
	KubeSchedulerBin         = "/usr/local/bin/kube-scheduler"
	KubectlBin               = "/usr/local/bin/kubectl"
)

// KubeAPIServer is kube-apiserver.service. It runs as a plain unit, not a
// static pod: the API comes up without the kubelet or containerd and
// without an image (docs/control-plane.md). It starts whether or not etcd
// answers yet and restarts until it does.
func KubeAPIServer(args []string) Unit {
	return controlPlaneUnit("kube-apiserver.service", "Kubernetes API server",
		"https://kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/", KubeAPIServerBin, args,
		[]string{"network-online.target"})
}

// KubeControllerManager is kube-controller-manager.service.
func KubeControllerManager(args []string) Unit {
	return controlPlaneUnit("kube-controller-manager.service", "Kubernetes controller manager",
		"https://kubernetes.io/docs/reference/command-line-tools-reference/kube-controller-manager/", KubeControllerManagerBin, args,
		[]string{"network-online.target", "kube-apiserver.service"})
}

// KubeScheduler is kube-scheduler.service.
func KubeScheduler(args []string) Unit {
	return controlPlaneUnit("kube-scheduler.service", "Kubernetes scheduler",
		"https://kubernetes.io/docs/reference/command-line-tools-reference/kube-scheduler/", KubeSchedulerBin, args,
		[]string{"network-online.target", "kube-apiserver.service"})
}

func controlPlaneUnit(name, desc, doc, bin string, args []string, after []string) Unit {
	return Unit{
		Name:          name,
		Description:   desc,
		Documentation: doc,
		After:         after,
		Wants:         []string{"network-online.target"},
		ExecStart:     ExecLine(bin, args),
		Restart:       "always",
		RestartSec:    "5",
		LimitNOFILE:   "65536",
		WantedBy:      []string{"multi-user.target"},
	}
}

// ExecLine renders a command line for ExecStart= so that systemd passes
// every argument to the program exactly as given: specifiers (%) and
// variables ($) are escaped, and an argument with spaces, quotes or
// backslashes is double-quoted with C-style escapes.
func ExecLine(bin string, args []string) string {
	parts := make([]string, 0, len(args)+1)
	for _, a := range append([]string{bin}, args...) {
		parts = append(parts, execArg(a))
	}
	return strings.Join(parts, " ")
}

func execArg(a string) string {
	a = strings.NewReplacer("%", "%%", "$", "$$").Replace(a)
	if a != "" && !strings.ContainsAny(a, " \t\"'\\;") {
		return a
	}
	a = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a)
	return `"` + a + `"`
}

// SplitExecLine is the inverse of ExecLine for the lines it renders: tests
// and status read a unit's arguments back with it.
func SplitExecLine(line string) []string {
	var (
		out   []string
		cur   strings.Builder
		inQ   bool
		have  bool
		runes = []rune(line)
	)
	for i := 0; i < len(runes); i++ {
		c := runes[i]
		switch {
		case inQ && c == '\\' && i+1 < len(runes):
			i++
			cur.WriteRune(runes[i])
		case c == '"':
			inQ = !inQ
			have = true
		case !inQ && (c == ' ' || c == '\t'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		case (c == '%' || c == '$') && i+1 < len(runes) && runes[i+1] == c:
			cur.WriteRune(c)
			have = true
			i++
		default:
			cur.WriteRune(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}
