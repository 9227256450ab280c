package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	clusterrender "github.com/kopsnode/agents/nodeup/render"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/releases"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// RenderOptions configure RenderCluster (`nodeup render`).
type RenderOptions struct {
	// ClusterFile is the cluster spec (cluster.yaml).
	ClusterFile string
	// Store is where the cluster is written, with the settings its nodes
	// open it with (the userdata carries them).
	Store  storeurl.Settings
	DryRun bool
	// UserdataDir, when set, receives <group>.sh per instance group
	// instead of the scripts being returned only.
	UserdataDir string
	// OpenStore opens the store (default: storeurl with Store's settings).
	OpenStore StoreOpener
	// Table and KopsnodeVersion override the version table and the
	// default kopsnode release (tests).
	Table           []releases.Release
	KopsnodeVersion string
	HTTPClient      *http.Client
	Log             *slog.Logger
}

// RenderOutput is what RenderCluster did, and each group's userdata.
type RenderOutput struct {
	*clusterrender.Result
	// Userdata maps an instance group to its userdata script (none in a
	// dry run: it would pin a configuration the store does not hold).
	Userdata map[string]string `json:"userdata,omitempty"`
	// UserdataFiles maps an instance group to the file written under
	// UserdataDir.
	UserdataFiles map[string]string `json:"userdataFiles,omitempty"`
}

// RenderCluster writes a cluster into the store from its spec
// (render.Run) and renders each instance group's userdata: the script
// `nodeup bootstrap-script` prints, pinned to the group's configuration
// hash and downloading nodeup from the mirror by its sha256.
func RenderCluster(ctx context.Context, o RenderOptions) (*RenderOutput, error) {
	if o.ClusterFile == "" {
		return nil, fmt.Errorf("--cluster-file: required: %w", errUsage)
	}
	if err := o.Store.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errUsage)
	}
	if o.OpenStore == nil {
		o.OpenStore = DefaultStoreOpener
	}
	data, err := config.ReadFile(o.ClusterFile)
	if err != nil {
		return nil, err
	}
	bc := BootConfig{Store: o.Store.URL, StoreEndpoint: o.Store.Endpoint, StoreRegion: o.Store.Region, StorePathStyle: o.Store.PathStyle}
	st, err := o.OpenStore(ctx, bc)
	if err != nil {
		return nil, fmt.Errorf("opening the state store %s: %w", o.Store.URL, err)
	}
	defer st.Close()
	res, _, err := clusterrender.Run(ctx, clusterrender.Options{ClusterData: data, Source: o.ClusterFile, Store: st, DryRun: o.DryRun,
		Table: o.Table, KopsnodeVersion: o.KopsnodeVersion, HTTPClient: o.HTTPClient, Log: o.Log})
	if err != nil {
		return nil, err
	}
	out := &RenderOutput{Result: res}
	if o.DryRun {
		return out, nil
	}
	if out.Userdata, err = Userdata(res, o.Store); err != nil {
		return nil, err
	}
	if o.UserdataDir != "" {
		out.UserdataFiles = map[string]string{}
		if err := os.MkdirAll(o.UserdataDir, 0o755); err != nil {
			return nil, fmt.Errorf("--userdata-dir: %w", err)
		}
		for group, script := range out.Userdata {
			p := filepath.Join(o.UserdataDir, group+".sh")
			if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
				return nil, fmt.Errorf("--userdata-dir: writing userdata of group %s: %w", group, err)
			}
			out.UserdataFiles[group] = p
		}
		out.Userdata = nil
	}
	return out, nil
}

// Userdata renders the bootstrap script of every group of a render result
// with RenderBootstrapScript: nodeup from the mirror pinned by sha256, the
// store settings s, the group and its configuration hash.
func Userdata(res *clusterrender.Result, s storeurl.Settings) (map[string]string, error) {
	out := map[string]string{}
	for _, g := range res.Groups {
		script, err := RenderBootstrapScript(BootstrapOptions{
			NodeupURLs:   []string{res.Nodeup.URL},
			NodeupSHA256: res.Nodeup.SHA256,
			Boot: BootConfig{Store: s.URL, Cluster: res.Cluster, Group: g.Name, ConfigHash: g.ConfigHash,
				StoreEndpoint: s.Endpoint, StoreRegion: s.Region, StorePathStyle: s.PathStyle},
		})
		if err != nil {
			return nil, fmt.Errorf("userdata of instance group %s: %w", g.Name, err)
		}
		out[g.Name] = script
	}
	return out, nil
}

// human prints the change report, then each group's userdata (or where it
// was written).
func (r *RenderOutput) human(w io.Writer) error {
	if err := r.Result.Human(w); err != nil {
		return err
	}
	var b strings.Builder
	groups := make([]string, 0, len(r.Userdata)+len(r.UserdataFiles))
	for g := range r.Userdata {
		groups = append(groups, g)
	}
	for g := range r.UserdataFiles {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		if p, ok := r.UserdataFiles[g]; ok {
			fmt.Fprintf(&b, "userdata of group %s: %s\n", g, p)
			continue
		}
		fmt.Fprintf(&b, "\n# ---- userdata of instance group %s ----\n%s", g, r.Userdata[g])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func renderCommand(openStore StoreOpener) *cli.Command {
	var (
		o       RenderOptions
		format  string
		logOpts logging.Options
	)
	return &cli.Command{
		Name:    "render",
		Summary: "write a cluster spec's node configurations, CAs, keys and etcd specs into the store and print each group's userdata",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.ClusterFile, "cluster-file", "", "the cluster spec (cluster.yaml)")
			o.Store.AddFlags(fs)
			fs.BoolVar(&o.DryRun, "dry-run", false, "write nothing; print the diff of every store object that would change")
			fs.StringVar(&o.UserdataDir, "userdata-dir", "", "write <group>.sh per instance group here instead of printing the userdata")
			fs.StringVar(&format, "o", "text", "output format: text or json")
			logOpts.AddFlags(fs)
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q: %w", args, cli.ErrUsage)
			}
			if format != "text" && format != "json" {
				return fmt.Errorf("-o: %q is not one of text, json: %w", format, cli.ErrUsage)
			}
			log, err := logging.New(env.Stderr, logOpts)
			if err != nil {
				return fmt.Errorf("%w: %w", err, cli.ErrUsage)
			}
			o.Log, o.OpenStore = log, openStore
			out, err := RenderCluster(ctx, o)
			if errors.Is(err, errUsage) {
				return fmt.Errorf("%w: %w", err, cli.ErrUsage)
			}
			if err != nil {
				return err
			}
			return cli.Print(env.Stdout, format, out, out.human)
		},
	}
}
