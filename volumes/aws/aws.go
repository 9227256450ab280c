// Package aws is the EBS volume provider: it finds an etcd member's volumes
// by their tags, creates them in this machine's availability zone, attaches
// them to this instance and waits for the block device (Xen names or the
// NVMe by-id links that carry the volume ID). It never takes a volume that
// is attached to another running instance, never force-detaches, and never
// deletes a volume.
package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/kopsnode/agents/pkg/config"
)

// Tags the provider finds and writes on volumes. ClusterTagPrefix+cluster
// with the value "owned" is the tag Kubernetes' cloud provider and kops use
// for resources a cluster owns.
const (
	ClusterTagPrefix   = "kubernetes.io/cluster/"
	ClusterTagValue    = "owned"
	EtcdClusterTag     = "kopsnode.io/etcd-cluster"
	SlotTag            = "kopsnode.io/etcd-slot"
	NameTag            = "Name"
	nvmeByIDPrefix     = "nvme-Amazon_Elastic_Block_Store_"
	defaultPoll        = 2 * time.Second
	defaultWaitTimeout = 5 * time.Minute
	defaultDevTimeout  = 2 * time.Minute
	defaultMaxAttempts = 10
)

// DeviceNames are the names this provider attaches volumes at, in order of
// preference: /dev/xvdf to /dev/xvdp, the range AWS recommends for EBS data
// volumes on Linux.
var DeviceNames = func() []string {
	var out []string
	for c := 'f'; c <= 'p'; c++ {
		out = append(out, "/dev/xvd"+string(c))
	}
	return out
}()

// Options tunes the provider; the zero value is what production uses.
type Options struct {
	// Logger receives progress; nil discards.
	Logger *slog.Logger
	// DeviceDir is where block devices appear (default /dev); tests point it
	// at a temporary directory.
	DeviceDir string
	// PollInterval is how often EC2 and the device directory are polled
	// while waiting (default 2s).
	PollInterval time.Duration
	// WaitTimeout bounds each wait for a volume state (created, attached,
	// detached, released by a terminated instance); default 5 minutes.
	WaitTimeout time.Duration
	// DeviceTimeout bounds the wait for the device after EC2 reports the
	// volume attached (default 2 minutes).
	DeviceTimeout time.Duration
	// RetryMaxAttempts and RetryMaxBackoff tune the SDK's retries of
	// throttled (RequestLimitExceeded) and 5xx answers (defaults 10 and
	// 20s).
	RetryMaxAttempts int
	RetryMaxBackoff  time.Duration
	// Credentials overrides the standard AWS credential chain (environment,
	// shared files, instance role); tests use static ones.
	Credentials aws.CredentialsProvider
}

// Provider attaches EBS volumes to the instance it runs on.
type Provider struct {
	ec2      *ec2.Client
	log      *slog.Logger
	opts     Options
	instance string
	zone     string
	region   string
}

// New asks the instance metadata service (IMDSv2) for this instance's ID,
// zone and, when cfg.Region is empty, region, and makes the EC2 client. cfg
// is the node configuration's volume.aws (its zero value: everything from
// the instance metadata service and AWS's endpoints).
func New(ctx context.Context, cfg config.AWSVolumeSpec, opts Options) (*Provider, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DeviceDir == "" {
		opts.DeviceDir = "/dev"
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = defaultPoll
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = defaultWaitTimeout
	}
	if opts.DeviceTimeout <= 0 {
		opts.DeviceTimeout = defaultDevTimeout
	}
	if opts.RetryMaxAttempts <= 0 {
		opts.RetryMaxAttempts = defaultMaxAttempts
	}
	if opts.RetryMaxBackoff <= 0 {
		opts.RetryMaxBackoff = retry.DefaultMaxBackoff
	}
	md := imds.New(imds.Options{
		Endpoint: cfg.IMDSEndpoint,
		// IMDSv2 only: a session token first, never the v1 fallback.
		EnableFallback: aws.FalseTernary,
	})
	where := "the instance metadata service"
	if cfg.IMDSEndpoint != "" {
		where += " at " + cfg.IMDSEndpoint
	}
	get := func(path string) (string, error) {
		out, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			return "", fmt.Errorf("aws volume provider: reading %s from %s: %w", path, where, err)
		}
		defer out.Content.Close()
		b, err := readAll(out.Content, 256)
		if err != nil {
			return "", fmt.Errorf("aws volume provider: reading %s from %s: %w", path, where, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	p := &Provider{log: opts.Logger, opts: opts}
	var err error
	if p.instance, err = get("instance-id"); err != nil {
		return nil, err
	}
	if p.zone, err = get("placement/availability-zone"); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(p.instance, "i-") || p.zone == "" {
		return nil, fmt.Errorf("aws volume provider: %s answered instance-id %q and availability zone %q, not an EC2 instance's", where, p.instance, p.zone)
	}
	p.region = cfg.Region
	if p.region == "" {
		if p.region, err = get("placement/region"); err != nil {
			return nil, err
		}
	}
	loadOpts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(p.region),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = opts.RetryMaxAttempts
				o.MaxBackoff = opts.RetryMaxBackoff
				// Every call waits its own backoff; a shared retry budget
				// would turn a long throttling spell into hard failures.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if cfg.IMDSEndpoint != "" {
		loadOpts = append(loadOpts, awsconfig.WithEC2IMDSEndpoint(cfg.IMDSEndpoint))
	}
	if opts.Credentials != nil {
		loadOpts = append(loadOpts, awsconfig.WithCredentialsProvider(opts.Credentials))
	}
	acfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("aws volume provider: loading the AWS configuration: %w", err)
	}
	p.ec2 = ec2.NewFromConfig(acfg, func(o *ec2.Options) {
		if cfg.EC2Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.EC2Endpoint)
		}
	})
	p.log = p.log.With("instance", p.instance, "zone", p.zone)
	p.log.Debug("aws volume provider ready", "region", p.region)
	return p, nil
}

// InstanceID is this instance's ID, from the instance metadata service.
func (p *Provider) InstanceID() string { return p.instance }

// Zone is this instance's availability zone.
func (p *Provider) Zone() string { return p.zone }

// Region is the region the EC2 client talks to.
func (p *Provider) Region() string { return p.region }

// EBSVolume is what the provider knows of one EBS volume.
type EBSVolume struct {
	ID, Zone, State string
	// Slot is the kopsnode.io/etcd-slot tag ("" when absent).
	Slot string
	Tags map[string]string
	// Instance, Device and AttachState describe the attachment, if any;
	// InstanceState is the holder's state (running, stopped, terminated...)
	// when Instance is not this instance, and PrivateIP that instance's
	// private IPv4 address (empty when EC2 answers none).
	Instance, Device, AttachState, InstanceState, PrivateIP string
}

// AttachedHere reports whether the volume is attached (or attaching) to
// this instance.
func (p *Provider) attachedHere(v EBSVolume) bool { return v.Instance == p.instance }

// AttachedElsewhereError: the volume is attached to another instance that is
// running (or starting, or stopping), so it is not taken. Callers wait and
// try again; status reports Instance.
type AttachedElsewhereError struct {
	VolumeID, Instance, InstanceState string
}

func (e *AttachedElsewhereError) Error() string {
	return fmt.Sprintf("volume %s is attached to instance %s, which is %s; it is never taken from a live instance (waiting for that instance to terminate or release it)", e.VolumeID, e.Instance, e.InstanceState)
}

// ErrWrongZone: the volume is in another availability zone than this
// instance, so it cannot be attached here.
var ErrWrongZone = errors.New("volume is in another availability zone")

// CallError is a failed EC2 call: which call, about which volume, and the
// EC2 error code and message when EC2 answered one.
type CallError struct {
	// Call is the EC2 action (AttachVolume); VolumeID may be empty; Detail
	// says more about the request ("to instance i-... at /dev/xvdf").
	Call, VolumeID, Detail string
	// Code and Message are EC2's (RequestLimitExceeded), empty when no
	// answer came.
	Code, Message string
	// Attempts is how many times the SDK tried (0: not known).
	Attempts int
	Err      error
}

func (e *CallError) Error() string {
	s := "ec2:" + e.Call
	if e.VolumeID != "" {
		s += " of volume " + e.VolumeID
	}
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.Code != "" {
		s += ": EC2 error " + e.Code + ": " + e.Message
	} else {
		s += ": " + e.Err.Error()
	}
	if e.Attempts > 1 {
		s += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	return s
}

func (e *CallError) Unwrap() error { return e.Err }

// callError wraps an EC2 error with the call and the volume it was about.
func callError(call, volumeID, detail string, err error) error {
	ce := &CallError{Call: call, VolumeID: volumeID, Detail: detail, Err: err}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		ce.Code, ce.Message = ae.ErrorCode(), ae.ErrorMessage()
	}
	var me *retry.MaxAttemptsError
	if errors.As(err, &me) {
		ce.Attempts = me.Attempt
	}
	return ce
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func ebsFrom(v types.Volume) EBSVolume {
	out := EBSVolume{ID: aws.ToString(v.VolumeId), Zone: aws.ToString(v.AvailabilityZone), State: string(v.State), Tags: map[string]string{}}
	for _, t := range v.Tags {
		out.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	out.Slot = out.Tags[SlotTag]
	for _, a := range v.Attachments {
		// A volume without multi-attach has at most one attachment; one
		// already detached is history.
		if a.State == types.VolumeAttachmentStateDetached {
			continue
		}
		out.Instance, out.Device, out.AttachState = aws.ToString(a.InstanceId), aws.ToString(a.Device), string(a.State)
	}
	return out
}

// ListEBS returns every volume tagged for the etcd cluster of the cluster,
// in every zone, sorted by slot then ID, with the state of the instances
// other than this one that hold them.
func (p *Provider) ListEBS(ctx context.Context, cluster, etcdCluster string) ([]EBSVolume, error) {
	in := &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("tag:" + ClusterTagPrefix + cluster), Values: []string{ClusterTagValue}},
		{Name: aws.String("tag:" + EtcdClusterTag), Values: []string{etcdCluster}},
	}}
	var vols []EBSVolume
	pg := ec2.NewDescribeVolumesPaginator(p.ec2, in)
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, callError("DescribeVolumes", "", fmt.Sprintf("tags %s%s=%s, %s=%s", ClusterTagPrefix, cluster, ClusterTagValue, EtcdClusterTag, etcdCluster), err)
		}
		for _, v := range page.Volumes {
			vols = append(vols, ebsFrom(v))
		}
	}
	if err := p.fillInstanceStates(ctx, vols); err != nil {
		return nil, err
	}
	sort.Slice(vols, func(i, j int) bool {
		if vols[i].Slot != vols[j].Slot {
			return vols[i].Slot < vols[j].Slot
		}
		return vols[i].ID < vols[j].ID
	})
	return vols, nil
}

// fillInstanceStates asks EC2 for the state of every other instance holding
// one of vols.
func (p *Provider) fillInstanceStates(ctx context.Context, vols []EBSVolume) error {
	var ids []string
	seen := map[string]bool{}
	for _, v := range vols {
		if v.Instance != "" && v.Instance != p.instance && !seen[v.Instance] {
			seen[v.Instance] = true
			ids = append(ids, v.Instance)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	infos, err := p.describeInstances(ctx, ids)
	if err != nil {
		return err
	}
	for i := range vols {
		if v := &vols[i]; v.Instance != "" && v.Instance != p.instance {
			v.InstanceState, v.PrivateIP = infos[v.Instance].state, infos[v.Instance].privateIP
			if v.InstanceState == "" {
				// Terminated instances drop out of DescribeInstances after
				// about an hour; their attachments are gone by then.
				v.InstanceState = string(types.InstanceStateNameTerminated)
			}
		}
	}
	return nil
}

// holderAlive reports whether an instance in this state keeps its volumes:
// anything but shutting-down and terminated. A stopped instance keeps them
// too, but will not use them until started; it is waited on, not robbed.
func holderAlive(state string) bool {
	switch types.InstanceStateName(state) {
	case types.InstanceStateNameShuttingDown, types.InstanceStateNameTerminated, types.InstanceStateNameStopped:
		return false
	}
	return true
}

func (p *Provider) describe(ctx context.Context, id string) (EBSVolume, error) {
	out, err := p.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil {
		return EBSVolume{}, callError("DescribeVolumes", id, "", err)
	}
	if len(out.Volumes) != 1 {
		return EBSVolume{}, fmt.Errorf("ec2:DescribeVolumes of volume %s: %d volumes answered, want 1", id, len(out.Volumes))
	}
	vols := []EBSVolume{ebsFrom(out.Volumes[0])}
	if err := p.fillInstanceStates(ctx, vols); err != nil {
		return EBSVolume{}, err
	}
	return vols[0], nil
}

// waitVolume polls the volume until done says it is ready, for at most
// WaitTimeout; what names the wait in errors and logs.
func (p *Provider) waitVolume(ctx context.Context, id, what string, done func(EBSVolume) (bool, error)) (EBSVolume, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.WaitTimeout)
	defer cancel()
	var t *time.Ticker
	for {
		v, err := p.describe(ctx, id)
		if err != nil {
			return v, err
		}
		ok, err := done(v)
		if err != nil || ok {
			return v, err
		}
		if t == nil {
			p.log.Info("waiting for volume", "volume", id, "for", what, "state", v.State, "attachment", v.AttachState, "holder", v.Instance)
			t = time.NewTicker(p.opts.PollInterval)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("volume %s: waiting for %s (state %s, attachment %q to %q): %w", id, what, v.State, v.AttachState, v.Instance, ctx.Err())
		case <-t.C:
		}
	}
}

// VolumeSpec is what CreateEBS makes.
type VolumeSpec struct {
	SizeGiB int
	// Type is the EBS volume type (default gp3).
	Type string
	// IOPS for io1, io2 and gp3 (0: the type's default).
	IOPS int
}

// CreateEBS creates a volume for the slot in this instance's zone, tagged
// for the cluster, etcd cluster and slot, and waits until it is available.
func (p *Provider) CreateEBS(ctx context.Context, cluster, etcdCluster, slot string, spec VolumeSpec) (EBSVolume, error) {
	if spec.SizeGiB <= 0 {
		return EBSVolume{}, fmt.Errorf("creating the volume of slot %s of etcd cluster %s: size %d GiB: must be at least 1", slot, etcdCluster, spec.SizeGiB)
	}
	vtype := spec.Type
	if vtype == "" {
		vtype = string(types.VolumeTypeGp3)
	}
	tags := []types.Tag{
		{Key: aws.String(ClusterTagPrefix + cluster), Value: aws.String(ClusterTagValue)},
		{Key: aws.String(EtcdClusterTag), Value: aws.String(etcdCluster)},
		{Key: aws.String(SlotTag), Value: aws.String(slot)},
		{Key: aws.String(NameTag), Value: aws.String(fmt.Sprintf("%s.etcd-%s.%s", slot, etcdCluster, cluster))},
	}
	in := &ec2.CreateVolumeInput{
		AvailabilityZone:  aws.String(p.zone),
		Size:              aws.Int32(int32(spec.SizeGiB)),
		VolumeType:        types.VolumeType(vtype),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: tags}},
	}
	if spec.IOPS > 0 {
		in.Iops = aws.Int32(int32(spec.IOPS))
	}
	out, err := p.ec2.CreateVolume(ctx, in)
	if err != nil {
		return EBSVolume{}, callError("CreateVolume", "", fmt.Sprintf("slot %s of etcd cluster %s in %s, %d GiB %s", slot, etcdCluster, p.zone, spec.SizeGiB, vtype), err)
	}
	id := aws.ToString(out.VolumeId)
	p.log.Info("created volume", "volume", id, "slot", slot, "etcdCluster", etcdCluster, "sizeGiB", spec.SizeGiB, "type", vtype)
	return p.waitVolume(ctx, id, "the new volume to become available", func(v EBSVolume) (bool, error) {
		switch types.VolumeState(v.State) {
		case types.VolumeStateAvailable:
			return true, nil
		case types.VolumeStateCreating:
			return false, nil
		}
		return false, fmt.Errorf("volume %s: created, then in state %s", id, v.State)
	})
}

// AttachEBS attaches the volume to this instance, unless it is already, and
// waits for its block device, whose path it returns. A volume held by
// another live instance is refused with *AttachedElsewhereError; one held by
// a stopped or terminated instance is waited on until EC2 releases it (it
// is never force-detached).
func (p *Provider) AttachEBS(ctx context.Context, id string) (string, error) {
	for attempt := 0; ; attempt++ {
		v, err := p.describe(ctx, id)
		if err != nil {
			return "", err
		}
		if v.Zone != p.zone {
			return "", fmt.Errorf("volume %s is in %s, this instance %s in %s: %w", id, v.Zone, p.instance, p.zone, ErrWrongZone)
		}
		if v.Instance != "" && !p.attachedHere(v) {
			if holderAlive(v.InstanceState) {
				return "", &AttachedElsewhereError{VolumeID: id, Instance: v.Instance, InstanceState: v.InstanceState}
			}
			if v, err = p.waitRelease(ctx, v); err != nil {
				return "", err
			}
		}
		if p.attachedHere(v) && v.AttachState == string(types.VolumeAttachmentStateDetaching) {
			if v, err = p.waitVolume(ctx, id, "its detachment from this instance to finish", func(v EBSVolume) (bool, error) {
				return v.Instance == "", nil
			}); err != nil {
				return "", err
			}
		}
		if !p.attachedHere(v) {
			if v.State == string(types.VolumeStateCreating) {
				if v, err = p.waitVolume(ctx, id, "the volume to become available", func(v EBSVolume) (bool, error) {
					return v.State != string(types.VolumeStateCreating), nil
				}); err != nil {
					return "", err
				}
			}
			dev, err := p.freeDevice(ctx)
			if err != nil {
				return "", fmt.Errorf("attaching volume %s: %w", id, err)
			}
			p.log.Info("attaching volume", "volume", id, "device", dev)
			_, err = p.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(id), InstanceId: aws.String(p.instance), Device: aws.String(dev)})
			switch code := errorCode(err); {
			case err == nil:
			case attempt < 3 && (code == "VolumeInUse" || code == "InvalidParameterValue" || code == "IncorrectState"):
				// Lost a race: another instance took the volume, another
				// attach took the device name, or the volume moved on.
				// Look again.
				p.log.Info("attach refused; looking again", "volume", id, "device", dev, "code", code)
				continue
			default:
				return "", callError("AttachVolume", id, fmt.Sprintf("to instance %s at %s", p.instance, dev), err)
			}
		}
		v, err = p.waitVolume(ctx, id, "the attachment to this instance", func(v EBSVolume) (bool, error) {
			if !p.attachedHere(v) {
				return false, fmt.Errorf("volume %s: no longer attached to this instance %s (holder %q, state %s)", id, p.instance, v.Instance, v.State)
			}
			return v.AttachState == string(types.VolumeAttachmentStateAttached), nil
		})
		if err != nil {
			return "", err
		}
		return p.waitDevice(ctx, v)
	}
}

// waitRelease waits until EC2 releases a volume held by another instance
// that is not alive (terminated, shutting down or stopped); it never
// detaches it. A holder that comes alive, or another instance taking the
// volume, ends the wait with *AttachedElsewhereError.
func (p *Provider) waitRelease(ctx context.Context, v EBSVolume) (EBSVolume, error) {
	holder, state := v.Instance, v.InstanceState
	p.log.Info("volume held by an instance that is not running; waiting for EC2 to release it", "volume", v.ID, "holder", holder, "holderState", state)
	v, err := p.waitVolume(ctx, v.ID, fmt.Sprintf("instance %s (%s) to release it", holder, state), func(v EBSVolume) (bool, error) {
		if v.Instance != "" && (v.Instance != holder || holderAlive(v.InstanceState)) {
			return false, &AttachedElsewhereError{VolumeID: v.ID, Instance: v.Instance, InstanceState: v.InstanceState}
		}
		return v.State == string(types.VolumeStateAvailable), nil
	})
	if err != nil && state == string(types.InstanceStateNameStopped) {
		err = fmt.Errorf("%w; a stopped instance keeps its volumes and they are never detached from it here: terminate %s (or detach the volume) for this machine to adopt it", err, holder)
	}
	return v, err
}

// freeDevice returns the first of DeviceNames that no volume attached to
// this instance uses and that does not exist in the device directory.
func (p *Provider) freeDevice(ctx context.Context) (string, error) {
	used := map[string]bool{}
	pg := ec2.NewDescribeVolumesPaginator(p.ec2, &ec2.DescribeVolumesInput{
		Filters: []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{p.instance}}},
	})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return "", callError("DescribeVolumes", "", "volumes attached to "+p.instance, err)
		}
		for _, v := range page.Volumes {
			for _, a := range v.Attachments {
				used[letters(aws.ToString(a.Device))] = true
			}
		}
	}
	for _, d := range DeviceNames {
		l := letters(d)
		if used[l] {
			continue
		}
		if _, err := os.Lstat(filepath.Join(p.opts.DeviceDir, "xvd"+l)); err == nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(p.opts.DeviceDir, "sd"+l)); err == nil {
			continue
		}
		return d, nil
	}
	return "", fmt.Errorf("no free device name among %s to %s on instance %s", DeviceNames[0], DeviceNames[len(DeviceNames)-1], p.instance)
}

// letters returns the drive letters of /dev/sdX or /dev/xvdX ("f").
func letters(dev string) string {
	b := filepath.Base(dev)
	if s, ok := strings.CutPrefix(b, "xvd"); ok {
		return s
	}
	if s, ok := strings.CutPrefix(b, "sd"); ok {
		return s
	}
	return b
}

// DevicePaths are the paths, under dir, where an EBS volume attached at
// device shows up: the Xen names (/dev/xvdf, /dev/sdf) and, on Nitro
// instances, the NVMe by-id link whose name carries the volume ID without
// its dash.
func DevicePaths(dir, volumeID, device string) []string {
	l := letters(device)
	return []string{
		filepath.Join(dir, "disk", "by-id", nvmeByIDPrefix+strings.ReplaceAll(volumeID, "-", "")),
		filepath.Join(dir, "xvd"+l),
		filepath.Join(dir, "sd"+l),
	}
}

func (p *Provider) waitDevice(ctx context.Context, v EBSVolume) (string, error) {
	paths := DevicePaths(p.opts.DeviceDir, v.ID, v.Device)
	ctx, cancel := context.WithTimeout(ctx, p.opts.DeviceTimeout)
	defer cancel()
	var t *time.Ticker
	for {
		for _, path := range paths {
			if _, err := os.Stat(path); err == nil {
				p.log.Info("volume attached", "volume", v.ID, "device", path)
				return path, nil
			}
		}
		if t == nil {
			p.log.Info("waiting for the device of the attached volume", "volume", v.ID, "paths", paths)
			t = time.NewTicker(p.opts.PollInterval)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("volume %s is attached at %s but no device appeared at %s: %w", v.ID, v.Device, strings.Join(paths, ", "), ctx.Err())
		case <-t.C:
		}
	}
}

// DetachEBS detaches the volume from this instance and waits until it is
// available. A volume not attached here is left alone.
func (p *Provider) DetachEBS(ctx context.Context, id string) error {
	v, err := p.describe(ctx, id)
	if err != nil {
		return err
	}
	if v.Instance == "" {
		return nil
	}
	if !p.attachedHere(v) {
		if holderAlive(v.InstanceState) {
			return &AttachedElsewhereError{VolumeID: id, Instance: v.Instance, InstanceState: v.InstanceState}
		}
		_, err := p.waitRelease(ctx, v)
		return err
	}
	if v.AttachState != string(types.VolumeAttachmentStateDetaching) {
		p.log.Info("detaching volume", "volume", id, "device", v.Device)
		_, err := p.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(id), InstanceId: aws.String(p.instance)})
		if err != nil && errorCode(err) != "IncorrectState" {
			return callError("DetachVolume", id, "from instance "+p.instance, err)
		}
	}
	_, err = p.waitVolume(ctx, id, "the detachment from this instance", func(v EBSVolume) (bool, error) {
		if v.Instance != "" && !p.attachedHere(v) {
			return false, &AttachedElsewhereError{VolumeID: id, Instance: v.Instance, InstanceState: v.InstanceState}
		}
		return v.Instance == "", nil
	})
	return err
}
