package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/e2e/machine"
)

// TestBakedImageConvergesWithoutDownloads bakes a machine tree with
// images/bake.sh (nodeup installed, assets downloaded and verified into the
// cache, nothing configured or started), then boots it in a network
// namespace where no mirror is reachable: the bootstrap script reuses the
// baked nodeup, and nodeup converges the node from the cache alone.
func TestBakedImageConvergesWithoutDownloads(t *testing.T) {
	f := newNodeFixture(t)
	// The mirror for baking is on the host's loopback; the machine will not
	// see it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.assets = newAssetServer(t, ln)
	f.standardAssets()
	pinned := f.putConfig(nodeConfig(f.assetList(), 110))
	bake := filepath.Join(moduleRoot(t), "images", "bake.sh")

	var bakeOut []byte
	f.m = machine.Boot(t, machine.Options{
		PrivateNetwork: true,
		Binds:          []machine.Bind{{Source: f.storeDir}},
		BeforeBoot: func(root string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bake, "--root", root, "--nodeup", f.nodeup,
				"--store", "file://"+f.storeDir, "--cluster", e2eCluster, "--group", e2eGroup,
				"--config-hash", pinned)
			var err error
			bakeOut, err = cmd.CombinedOutput()
			if err != nil {
				return &bakeError{err: err, out: string(bakeOut)}
			}
			// Only the bake phase ran: assets are cached, nothing is installed.
			for name, blob := range f.blobs {
				if _, err := os.Stat(filepath.Join(root, "var/cache/nodeup/assets", sha256Hex(blob))); err != nil {
					return &bakeError{err: err, out: "asset " + name + " not in the cache after baking\n" + string(bakeOut)}
				}
			}
			for _, p := range []string{"usr/local/bin/kubelet", "etc/systemd/system/kubelet.service"} {
				if _, err := os.Stat(filepath.Join(root, p)); err == nil {
					return &bakeError{err: os.ErrExist, out: "/" + p + " exists after the bake phase, which should configure nothing"}
				}
			}
			return nil
		},
	})
	t.Logf("bake output:\n%s", bakeOut)
	served := f.assets.requests.Load()
	if served == 0 {
		t.Fatalf("baking downloaded nothing")
	}
	f.assets.close()

	// No mirror serves nodeup: the script must reuse the baked binary.
	f.bootstrap(f.renderBootstrap(pinned, "http://127.0.0.1:9/nodeup"))
	f.requireActive(daemons...)
	if got := strings.TrimSpace(f.m.MustExec("sha256sum", "/usr/local/bin/kubelet")); !strings.HasPrefix(got, sha256Hex(f.blobs["kubelet"])) {
		t.Errorf("installed kubelet: %s, want sha256 %s", got, sha256Hex(f.blobs["kubelet"]))
	}
	if n := f.assets.requests.Load(); n != served {
		t.Errorf("the booted node made %d asset requests; the baked cache should serve them all", n-served)
	}
}

type bakeError struct {
	err error
	out string
}

func (e *bakeError) Error() string { return "images/bake.sh: " + e.err.Error() + "\n" + e.out }
func (e *bakeError) Unwrap() error { return e.err }
