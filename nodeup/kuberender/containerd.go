package kuberender

import (
	"bytes"
	"fmt"
	"path"
	"sort"

	"github.com/pelletier/go-toml/v2"

	"github.com/kopsnode/agents/pkg/config"
)

// ContainerdPaths are the node paths containerd's configuration names.
type ContainerdPaths struct {
	Runc       string // runc binary
	CNIBinDir  string
	CNIConfDir string
	// CertsDir holds one <host>/hosts.toml per mirrored registry
	// (containerd 2.x).
	CertsDir string
}

// File is a rendered file for the node.
type File struct {
	Path    string
	Content []byte
}

// Containerd configuration schema versions by containerd major version.
const (
	containerdSchema1x = 2
	containerdSchema2x = 3
)

// ContainerdConfig renders /etc/containerd/config.toml, plus the registry
// hosts files it points at (containerd 2.x), in the schema of the major
// version of rt.Version (empty: 2.x). Containerd ignores keys it does not
// know, so the keys here are the ones its config dump shows (see the
// tests that run the real containerd).
func ContainerdConfig(rt config.ContainerRuntimeSpec, p ContainerdPaths) (cfg []byte, hosts []File, err error) {
	major, err := config.ContainerdMajor(rt.Version)
	if err != nil {
		return nil, nil, fmt.Errorf("spec.containerRuntime.version: %w", err)
	}
	systemd := rt.SystemdCgroup == nil || *rt.SystemdCgroup
	runc := map[string]any{
		"runtime_type": "io.containerd.runc.v2",
		"options":      map[string]any{"BinaryName": p.Runc, "SystemdCgroup": systemd},
	}
	var doc map[string]any
	switch major {
	case 1:
		cri := map[string]any{
			"sandbox_image":          rt.SandboxImage,
			"restrict_oom_score_adj": rt.RestrictOOMScoreAdj,
			"cni":                    map[string]any{"bin_dir": p.CNIBinDir, "conf_dir": p.CNIConfDir},
			"containerd": map[string]any{
				"default_runtime_name": "runc",
				"runtimes":             map[string]any{"runc": runc},
			},
		}
		if len(rt.RegistryMirrors) > 0 {
			mirrors := map[string]any{}
			for host, eps := range rt.RegistryMirrors {
				mirrors[host] = map[string]any{"endpoint": append([]string(nil), eps...)}
			}
			cri["registry"] = map[string]any{"mirrors": mirrors}
		}
		doc = map[string]any{
			"version": containerdSchema1x,
			"plugins": map[string]any{"io.containerd.grpc.v1.cri": cri},
		}
	default:
		images := map[string]any{
			"pinned_images": map[string]any{"sandbox": rt.SandboxImage},
		}
		if len(rt.RegistryMirrors) > 0 {
			images["registry"] = map[string]any{"config_path": p.CertsDir}
			hosts, err = containerdHosts(rt.RegistryMirrors, p.CertsDir)
			if err != nil {
				return nil, nil, err
			}
		}
		doc = map[string]any{
			"version": containerdSchema2x,
			"plugins": map[string]any{
				"io.containerd.cri.v1.images": images,
				"io.containerd.cri.v1.runtime": map[string]any{
					"restrict_oom_score_adj": rt.RestrictOOMScoreAdj,
					"cni":                    map[string]any{"bin_dirs": []string{p.CNIBinDir}, "conf_dir": p.CNIConfDir},
					"containerd": map[string]any{
						"default_runtime_name": "runc",
						"runtimes":             map[string]any{"runc": runc},
					},
				},
			},
		}
	}
	b, err := toml.Marshal(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("rendering containerd configuration: %w", err)
	}
	return append([]byte("# Managed by nodeup.\n"), b...), hosts, nil
}

// containerdHosts renders <certsDir>/<host>/hosts.toml for each mirrored
// registry: containerd tries the mirrors in order, then the registry itself.
func containerdHosts(mirrors map[string][]string, certsDir string) ([]File, error) {
	hostNames := make([]string, 0, len(mirrors))
	for h := range mirrors {
		hostNames = append(hostNames, h)
	}
	sort.Strings(hostNames)
	var out []File
	for _, h := range hostNames {
		// containerd tries the [host."<url>"] tables in file order, and
		// go-toml sorts map keys, so each mirror's table is encoded on its
		// own and appended in the configured order.
		var b []byte
		b = append(b, "# Managed by nodeup.\n"...)
		for i, ep := range mirrors[h] {
			t, err := toml.Marshal(map[string]any{
				"host": map[string]any{ep: map[string]any{"capabilities": []string{"pull", "resolve"}}},
			})
			if err != nil {
				return nil, fmt.Errorf("rendering hosts.toml of %s: %w", h, err)
			}
			if i > 0 {
				// The parent [host] table may be declared only once.
				t = bytes.TrimPrefix(t, []byte("[host]\n"))
			}
			b = append(b, t...)
		}
		var check map[string]any
		if err := toml.Unmarshal(b, &check); err != nil {
			return nil, fmt.Errorf("rendering hosts.toml of %s: %w", h, err)
		}
		out = append(out, File{Path: path.Join(certsDir, h, "hosts.toml"), Content: b})
	}
	return out, nil
}
