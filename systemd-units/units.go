// Package units holds the systemd unit definitions of the agents (containerd,
// kubelet, protokube, etcd-manager, nodeup) as pure renderers, and the
// Manager through which nodeup drives systemd: over D-Bus on a live machine,
// or not at all when it works on another root (then units are enabled by
// symlink, as `systemctl enable` would).
package units

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// Dir is where nodeup writes unit files.
const Dir = "/etc/systemd/system"

// Unit is a service unit definition.
type Unit struct {
	Name          string // "kubelet.service"
	Description   string
	Documentation string
	After         []string
	Wants         []string
	Requires      []string
	// Type is the service type (simple, notify, oneshot).
	Type             string
	ExecStartPre     []string
	ExecStart        string
	Environment      []string // KEY=value
	EnvironmentFiles []string // "-/etc/default/kubelet" for optional ones
	Restart          string
	RestartSec       string
	RemainAfterExit  bool
	Delegate         bool
	KillMode         string
	LimitNOFILE      string
	OOMScoreAdjust   string
	TimeoutStartSec  string
	WantedBy         []string
}

// Render returns the unit file's text; the same definition always renders
// to the same bytes.
func (u Unit) Render() string {
	var b strings.Builder
	b.WriteString("# Managed by nodeup; changes are overwritten.\n[Unit]\n")
	kv := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s=%s\n", k, v)
		}
	}
	kv("Description", u.Description)
	kv("Documentation", u.Documentation)
	kv("Wants", strings.Join(u.Wants, " "))
	kv("Requires", strings.Join(u.Requires, " "))
	kv("After", strings.Join(u.After, " "))
	b.WriteString("\n[Service]\n")
	kv("Type", u.Type)
	for _, e := range u.Environment {
		kv("Environment", quoteEnv(e))
	}
	for _, f := range u.EnvironmentFiles {
		kv("EnvironmentFile", f)
	}
	for _, p := range u.ExecStartPre {
		kv("ExecStartPre", p)
	}
	kv("ExecStart", u.ExecStart)
	if u.RemainAfterExit {
		kv("RemainAfterExit", "yes")
	}
	kv("Restart", u.Restart)
	kv("RestartSec", u.RestartSec)
	if u.Delegate {
		kv("Delegate", "yes")
	}
	kv("KillMode", u.KillMode)
	kv("LimitNOFILE", u.LimitNOFILE)
	kv("OOMScoreAdjust", u.OOMScoreAdjust)
	kv("TimeoutStartSec", u.TimeoutStartSec)
	if len(u.WantedBy) > 0 {
		b.WriteString("\n[Install]\n")
		kv("WantedBy", strings.Join(u.WantedBy, " "))
	}
	return b.String()
}

func quoteEnv(e string) string {
	if strings.ContainsAny(e, " \t\"") {
		return `"` + strings.ReplaceAll(e, `"`, `\"`) + `"`
	}
	return e
}

// Link is a symlink that enabling a unit creates.
type Link struct {
	Path   string // /etc/systemd/system/multi-user.target.wants/kubelet.service
	Target string // /etc/systemd/system/kubelet.service
}

// EnableLinks parses the [Install] section of a unit file and returns the
// symlinks `systemctl enable` would create (WantedBy= and RequiredBy=).
func EnableLinks(name, content string) []Link {
	var links []Link
	section := ""
	for _, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line
			continue
		}
		if section != "[Install]" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		suffix := ""
		switch strings.TrimSpace(k) {
		case "WantedBy":
			suffix = ".wants"
		case "RequiredBy":
			suffix = ".requires"
		default:
			continue
		}
		for _, target := range strings.Fields(v) {
			links = append(links, Link{
				Path:   path.Join(Dir, target+suffix, name),
				Target: path.Join(Dir, name),
			})
		}
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Path < links[j].Path })
	return links
}
