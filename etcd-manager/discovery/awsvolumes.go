package discovery

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
)

// VolumeHolder is one cloud volume of the etcd cluster attached to an
// instance: the slot it carries and the holder's private address.
type VolumeHolder struct {
	Slot, VolumeID, Instance, PrivateIP string
	// Running is whether the holder is running; a stopped or terminated
	// instance runs no etcd-manager.
	Running bool
}

// AWSVolumes finds peers through the etcd cluster's EBS volumes: every
// volume with a slot attached to a running instance is a peer whose ID is
// the slot (the member identity) and whose manager endpoint is the
// holder's private address at ManagerPort. It reads EC2 only (through
// List, which volumes/aws provides) and registers nothing, so it works
// while the state store's registry is stale.
type AWSVolumes struct {
	// List returns the etcd cluster's attached volumes; its errors name
	// the EC2 call that failed.
	List        func(ctx context.Context) ([]VolumeHolder, error)
	ManagerPort int
}

// Peers lists the volumes and returns PeersFromVolumes of them.
func (a AWSVolumes) Peers(ctx context.Context) ([]Peer, error) {
	hs, err := a.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("aws-volumes discovery: %w", err)
	}
	return PeersFromVolumes(hs, a.ManagerPort), nil
}

// PeersFromVolumes picks the peers: volumes with a slot held by a running
// instance with a private address, one per slot (the holder whose volume
// ID sorts first, so every reader picks the same), sorted by ID.
func PeersFromVolumes(hs []VolumeHolder, managerPort int) []Peer {
	hs = append([]VolumeHolder(nil), hs...)
	sort.Slice(hs, func(i, j int) bool {
		if hs[i].Slot != hs[j].Slot {
			return hs[i].Slot < hs[j].Slot
		}
		return hs[i].VolumeID < hs[j].VolumeID
	})
	var out []Peer
	seen := map[string]bool{}
	for _, h := range hs {
		if h.Slot == "" || !h.Running || h.PrivateIP == "" || seen[h.Slot] {
			continue
		}
		seen[h.Slot] = true
		out = append(out, Peer{ID: h.Slot, ManagerAddr: net.JoinHostPort(h.PrivateIP, strconv.Itoa(managerPort))})
	}
	return out
}
