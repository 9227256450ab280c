package restore

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Stale API server endpoint records, as kube-apiserver keeps them under
// its default --etcd-prefix (/registry):
//   - MasterLeasesPrefix: the "lease" endpoint reconciler's record per API
//     server address (/registry/masterleases/<ip>), from which the
//     default/kubernetes Endpoints are built;
//   - APIServerLeasesPrefix: the API server identity Leases
//     (kube-system/kube-apiserver-<hash of the host name>, label
//     apiserver.kubernetes.io/identity=kube-apiserver).
//
// A restored backup holds the records of the API servers that ran when it
// was taken. They cannot be told apart from live ones without decoding
// (the values are protobuf), so every one is deleted: a live API server
// writes its own again within seconds (its lease renewal), and the dead
// ones no longer send clients to addresses that are gone.
const (
	MasterLeasesPrefix    = "/registry/masterleases/"
	APIServerLeasesPrefix = "/registry/leases/kube-system/kube-apiserver-"
)

// StalePrefixes are the key prefixes ClearAPIServerLeases deletes.
var StalePrefixes = []string{MasterLeasesPrefix, APIServerLeasesPrefix}

// ClearAPIServerLeases deletes every key under StalePrefixes through kv
// and returns how many keys went.
func ClearAPIServerLeases(ctx context.Context, kv clientv3.KV) (int64, error) {
	var n int64
	for _, p := range StalePrefixes {
		resp, err := kv.Delete(ctx, p, clientv3.WithPrefix())
		if err != nil {
			return n, fmt.Errorf("deleting the keys under %s: %w", p, err)
		}
		n += resp.Deleted
	}
	return n, nil
}
