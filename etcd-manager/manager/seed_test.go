package manager_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
)

// TestSeedSpecAndLocalClient: with no spec in the store, the spec is
// seeded from the instance's configuration (as nodeup passes it with
// --seed-members and --seed-etcd-version) and the cluster forms from it;
// etcd also serves on 127.0.0.1, where a client holding the API server's
// certificate reaches it.
func TestSeedSpecAndLocalClient(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "127.44.30")
	certDir := filepath.Join(t.TempDir(), "apiserver")
	cfg := c.Config("m1", c.IP(1))
	cfg.Seed = &control.Spec{MemberCount: 1, EtcdVersion: version}
	cfg.LocalClientAddress = "127.0.0.1"
	cfg.APIServerClientCertDir = certDir
	c.StartWith(cfg)
	c.WaitMembers(converge, "m1")
	spec, err := control.ReadSpec(context.Background(), c.Store, c.Layout)
	if err != nil || spec != *cfg.Seed {
		t.Fatalf("spec in the store = %+v, %v; want the seed %+v", spec, err, *cfg.Seed)
	}
	c.Eventually(converge, "the API server's etcd client files", func() error {
		for _, f := range []string{manager.APIServerClientCertFile, manager.APIServerClientKeyFile, manager.APIServerCAFile} {
			if _, err := os.Stat(filepath.Join(certDir, f)); err != nil {
				return err
			}
		}
		return nil
	})
	tlsCfg, _ := apiserverTLS(t, certDir)
	local := newEtcdClient(t, tlsCfg, []string{fmt.Sprintf("https://127.0.0.1:%d", harness.ClientPort)})
	putGet(c, local, "/registry/local", "via 127.0.0.1")
	// The member advertises only its node address, not 127.0.0.1.
	c.Eventually(converge, "status with members", func() error {
		st, err := c.Instance("m1").M.Status(context.Background())
		if err != nil || len(st.Members) != 1 {
			return fmt.Errorf("status %+v, %v", st.Members, err)
		}
		if urls := st.Members[0].ClientURLs; len(urls) != 1 || urls[0] != fmt.Sprintf("https://%s:%d", c.IP(1), harness.ClientPort) {
			return fmt.Errorf("client URLs %v", urls)
		}
		return nil
	})
}

// TestSeedNeverOverwritesSpec: a spec already in the store (written by
// etcd-manager-ctl) wins over the seed of every instance.
func TestSeedNeverOverwritesSpec(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "127.44.31")
	c.SetSpec(1, version)
	cfg := c.Config("m1", c.IP(1))
	cfg.Seed = &control.Spec{MemberCount: 3, EtcdVersion: version}
	c.StartWith(cfg)
	c.WaitMembers(converge, "m1")
	spec, err := control.ReadSpec(context.Background(), c.Store, c.Layout)
	if err != nil || spec.MemberCount != 1 {
		t.Fatalf("spec = %+v, %v; want the operator's 1 member kept", spec, err)
	}
}
