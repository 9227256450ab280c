package discovery

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Only volumes held by running instances make peers: a stopped or
// terminated holder, a volume without a slot or a holder without an
// address is not one; a slot on two volumes resolves to the first.
func TestPeersFromVolumes(t *testing.T) {
	hs := []VolumeHolder{
		{Slot: "main-3", VolumeID: "vol-3", Instance: "i-3", PrivateIP: "10.0.0.3", Running: false}, // stopped
		{Slot: "main-1", VolumeID: "vol-1", Instance: "i-1", PrivateIP: "10.0.0.1", Running: true},
		{Slot: "main-2", VolumeID: "vol-2", Instance: "i-2", PrivateIP: "", Running: false}, // terminated
		{Slot: "", VolumeID: "vol-x", Instance: "i-4", PrivateIP: "10.0.0.4", Running: true},
		{Slot: "main-1", VolumeID: "vol-9", Instance: "i-5", PrivateIP: "10.0.0.5", Running: true},
		{Slot: "main-4", VolumeID: "vol-4", Instance: "i-6", PrivateIP: "fd00::6", Running: true},
	}
	got := PeersFromVolumes(hs, 3994)
	want := []Peer{{ID: "main-1", ManagerAddr: "10.0.0.1:3994"}, {ID: "main-4", ManagerAddr: "[fd00::6]:3994"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("peers %v, want %v", got, want)
	}
}

func TestAWSVolumesErrorNamesBackend(t *testing.T) {
	a := AWSVolumes{ManagerPort: 1, List: func(context.Context) ([]VolumeHolder, error) {
		return nil, errors.New("ec2:DescribeVolumes: boom")
	}}
	_, err := a.Peers(context.Background())
	if err == nil || !strings.Contains(err.Error(), "aws-volumes discovery: ec2:DescribeVolumes") {
		t.Fatalf("error %v", err)
	}
}
