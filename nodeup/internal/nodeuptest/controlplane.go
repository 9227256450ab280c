package nodeuptest

import (
	"context"
	"testing"

	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store"
)

// SeedControlPlane writes to s what a cluster's first control-plane node
// publishes and a worker reads: the kubernetes CA (bundle and public
// certificate) and the node bootstrap token. It returns the token.
func SeedControlPlane(t testing.TB, s store.Store, cluster string) bootstraptoken.Token {
	t.Helper()
	ctx := context.Background()
	ks, err := pki.NewKeystore(s, cluster+"/pki", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.EnsureCA(ctx, pki.CAKubernetes, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, _, err := bootstraptoken.Ensure(ctx, s, cluster)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
