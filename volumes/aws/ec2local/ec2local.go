// Package ec2local is a stand-in for AWS used by tests: an in-memory HTTP
// server that speaks the EC2 Query API (form posts of Action=...&
// Version=2016-11-15, XML answers in the EC2 namespace, errors as
// <Response><Errors><Error><Code/><Message/>) and the instance metadata
// service (IMDSv2), because the real EC2 cannot be reached from a test.
//
// It covers exactly the calls the aws volume provider makes, and no more:
// DescribeVolumes (filters tag:KEY, tag-key, availability-zone, volume-id,
// status, attachment.instance-id; VolumeId.N; MaxResults/NextToken),
// CreateVolume (ClientToken honoured), AttachVolume, DetachVolume, DescribeInstances (InstanceId.N;
// filters instance-id, instance-state-name, availability-zone, tag:KEY) and
// CreateTags; and for IMDSv2 PUT /latest/api/token and GET
// /latest/meta-data/instance-id, placement/availability-zone and
// placement/region. Requests are not authenticated (signatures are ignored).
//
// Volumes move through EC2's states after Options.Delay (creating ->
// available, attaching -> attached, detaching -> available); the states are
// advanced on every request from the clock, so no goroutine runs behind a
// test's back. Tests add and terminate instances (a terminated instance's
// volumes become available), inject errors such as RequestLimitExceeded,
// and may have an attached volume appear as a device file under
// Options.DeviceDir/<instance ID>, named as on Xen (xvdf) or as on Nitro (an nvme node and
// its /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol... link).
package ec2local

import (
	"encoding/xml"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Namespace is the XML namespace of EC2 API version 2016-11-15.
const Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// APIVersion is the only Version the server accepts.
const APIVersion = "2016-11-15"

// DeviceNaming says how an attached volume appears under Options.DeviceDir.
type DeviceNaming string

const (
	// NoDevice: attached volumes do not appear as files.
	NoDevice DeviceNaming = ""
	// XenNaming: /dev/sdf or /dev/xvdf appear as DeviceDir/xvdf.
	XenNaming DeviceNaming = "xen"
	// NVMeNaming: DeviceDir/nvmeNn1 and the by-id link
	// DeviceDir/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<hex>.
	NVMeNaming DeviceNaming = "nvme"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Region is answered by IMDS (default "us-east-1").
	Region string
	// Delay is how long each state transition takes (default 0: the next
	// request sees the volume available or attached).
	Delay time.Duration
	// DeviceDir, with Naming, makes attached volumes appear as files:
	// DeviceDir/<instance ID> stands for that instance's /dev.
	DeviceDir string
	Naming    DeviceNaming
	// PageSize, when positive, caps the volumes of one DescribeVolumes page
	// (EC2 may answer fewer than MaxResults), to exercise NextToken.
	PageSize int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
}

// Instance states, as EC2 names them.
const (
	InstanceRunning    = "running"
	InstanceStopped    = "stopped"
	InstanceTerminated = "terminated"
)

// Volume states and attachment states, as EC2 names them.
const (
	VolumeCreating  = "creating"
	VolumeAvailable = "available"
	VolumeInUse     = "in-use"
	AttachAttaching = "attaching"
	AttachAttached  = "attached"
	AttachDetaching = "detaching"
)

// Fault is an error the server answers instead of serving a request.
type Fault struct {
	// Action limits the fault to one action ("" matches every action).
	Action string
	// Code and Status are the EC2 error code and HTTP status, for example
	// RequestLimitExceeded and 503.
	Code   string
	Status int
	// Count is how many requests fail (at least 1).
	Count int
}

// VolumeState is a snapshot of a volume, for tests' assertions.
type VolumeState struct {
	ID, AvailabilityZone, Type, State string
	SizeGiB, IOPS                     int
	Tags                              map[string]string
	// Instance, Device and AttachState describe the attachment, if any.
	Instance, Device, AttachState string
}

type attachment struct {
	instance, device, state string
	at                      time.Time // when state was entered
}

type volume struct {
	id, az, vtype, state string
	size, iops           int
	created              time.Time
	tags                 map[string]string
	att                  *attachment
	backing              string // what the device file links to, if set
	nvme                 string // the nvme node name while attached
}

type instance struct {
	id, az, state string
	privateIP     string
	tags          map[string]string
	launched      time.Time
}

// Server is the stand-in. It is safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex // guards everything below
	volumes   map[string]*volume
	order     []string // volume IDs in creation order
	instances map[string]*instance
	tokens    map[string]time.Time
	faults    []Fault
	calls     map[string]int
	created   map[string]string // CreateVolume ClientToken -> volume ID
	seq       int
}

// New returns a server with no instances and no volumes.
func New(opts Options) *Server {
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		opts:      opts,
		log:       log,
		volumes:   map[string]*volume{},
		instances: map[string]*instance{},
		tokens:    map[string]time.Time{},
		calls:     map[string]int{},
		created:   map[string]string{},
	}
}

// AddInstance adds a running instance in zone az (which must be in the
// server's region, e.g. us-east-1a) and returns its ID. Its private address,
// answered by DescribeInstances, is 10.0.x.y from its sequence number.
func (s *Server) AddInstance(az string, tags map[string]string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	id := fmt.Sprintf("i-%017x", s.seq)
	ip := fmt.Sprintf("10.0.%d.%d", s.seq/250, s.seq%250+1)
	s.instances[id] = &instance{id: id, az: az, state: InstanceRunning, privateIP: ip, tags: copyTags(tags), launched: s.opts.Now()}
	return id
}

// SetPrivateIP sets an instance's private address (tests that run real
// servers on loopback addresses give the instances those).
func (s *Server) SetPrivateIP(id, ip string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[id]
	if !ok {
		return fmt.Errorf("ec2local: no instance %s", id)
	}
	in.privateIP = ip
	return nil
}

// SetInstanceState sets an instance's state. Terminating it detaches its
// volumes (detaching, then available after Delay), as EC2 does; stopping
// keeps them attached.
func (s *Server) SetInstanceState(id, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[id]
	if !ok {
		return fmt.Errorf("ec2local: no instance %s", id)
	}
	in.state = state
	if state == InstanceTerminated {
		now := s.opts.Now()
		for _, v := range s.volumes {
			if v.att != nil && v.att.instance == id {
				v.att.state, v.att.at = AttachDetaching, now
			}
		}
		s.advanceLocked()
	}
	return nil
}

// AddVolume adds an available volume (as if created earlier, by anyone)
// and returns its ID.
func (s *Server) AddVolume(az string, sizeGiB int, tags map[string]string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newVolumeLocked(az, "gp3", sizeGiB, 0, tags, VolumeAvailable).id
}

// AttachNow attaches a volume to an instance at once (a volume the test
// finds already attached), bypassing the API's checks.
func (s *Server) AttachNow(volumeID, instanceID, device string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.volumes[volumeID]
	if !ok {
		return fmt.Errorf("ec2local: no volume %s", volumeID)
	}
	if _, ok := s.instances[instanceID]; !ok {
		return fmt.Errorf("ec2local: no instance %s", instanceID)
	}
	v.att = &attachment{instance: instanceID, device: device, state: AttachAttached, at: s.opts.Now()}
	v.state = VolumeInUse
	return s.deviceUpLocked(v)
}

// SetBacking makes the device file of a volume a symbolic link to path (for
// example a loop device) instead of an empty regular file.
func (s *Server) SetBacking(volumeID, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.volumes[volumeID]
	if !ok {
		return fmt.Errorf("ec2local: no volume %s", volumeID)
	}
	v.backing = path
	return nil
}

// Inject queues a fault; faults are used in the order injected.
func (s *Server) Inject(f Fault) {
	if f.Count < 1 {
		f.Count = 1
	}
	if f.Status == 0 {
		f.Status = http.StatusBadRequest
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// Calls returns how many requests of the action were received, faults
// included.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// Volume returns a snapshot of a volume, its states advanced to now.
func (s *Server) Volume(id string) (VolumeState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceLocked()
	v, ok := s.volumes[id]
	if !ok {
		return VolumeState{}, false
	}
	st := VolumeState{ID: v.id, AvailabilityZone: v.az, Type: v.vtype, State: v.state, SizeGiB: v.size, IOPS: v.iops, Tags: copyTags(v.tags)}
	if v.att != nil {
		st.Instance, st.Device, st.AttachState = v.att.instance, v.att.device, v.att.state
	}
	return st, true
}

// Volumes returns the IDs of every volume in creation order.
func (s *Server) Volumes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

func (s *Server) newVolumeLocked(az, vtype string, size, iops int, tags map[string]string, state string) *volume {
	s.seq++
	v := &volume{id: fmt.Sprintf("vol-%017x", s.seq), az: az, vtype: vtype, size: size, iops: iops,
		state: state, created: s.opts.Now(), tags: copyTags(tags)}
	s.volumes[v.id] = v
	s.order = append(s.order, v.id)
	return v
}

// advanceLocked moves every state whose Delay has passed.
func (s *Server) advanceLocked() {
	now := s.opts.Now()
	due := func(t time.Time) bool { return !now.Before(t.Add(s.opts.Delay)) }
	for _, id := range s.order {
		v := s.volumes[id]
		if v.state == VolumeCreating && due(v.created) {
			v.state = VolumeAvailable
		}
		if v.att == nil {
			continue
		}
		switch {
		case v.att.state == AttachAttaching && due(v.att.at):
			v.att.state = AttachAttached
			if err := s.deviceUpLocked(v); err != nil {
				s.log.Warn("ec2local: creating device file", "volume", v.id, "err", err)
			}
		case v.att.state == AttachDetaching && due(v.att.at):
			s.deviceDownLocked(v)
			v.att = nil
			v.state = VolumeAvailable
		}
	}
}

// devicePaths returns the files that stand for the attached volume.
func (s *Server) devicePaths(v *volume) (node, link string) {
	if s.opts.DeviceDir == "" || v.att == nil {
		return "", ""
	}
	dir := filepath.Join(s.opts.DeviceDir, v.att.instance)
	switch {
	case s.opts.Naming == XenNaming:
		base := filepath.Base(v.att.device)
		if strings.HasPrefix(base, "sd") {
			base = "xv" + base[1:] // sdf -> xvdf, as Xen names it
		}
		return filepath.Join(dir, base), ""
	case s.opts.Naming == NVMeNaming:
		return filepath.Join(dir, v.nvme), filepath.Join(dir, "disk", "by-id", "nvme-Amazon_Elastic_Block_Store_"+strings.ReplaceAll(v.id, "-", ""))
	}
	return "", ""
}

func (s *Server) deviceUpLocked(v *volume) error {
	if s.opts.DeviceDir == "" || s.opts.Naming == NoDevice {
		return nil
	}
	if s.opts.Naming == NVMeNaming {
		used := map[string]bool{}
		for _, o := range s.volumes {
			used[o.nvme] = true
		}
		for i := 1; ; i++ {
			if n := fmt.Sprintf("nvme%dn1", i); !used[n] {
				v.nvme = n
				break
			}
		}
	}
	node, link := s.devicePaths(v)
	if err := os.MkdirAll(filepath.Dir(node), 0o755); err != nil {
		return err
	}
	if v.backing != "" {
		if err := os.Symlink(v.backing, node); err != nil {
			return err
		}
	} else if err := os.WriteFile(node, nil, 0o600); err != nil {
		return err
	}
	if link != "" {
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return err
		}
		return os.Symlink(filepath.Join("..", "..", filepath.Base(node)), link)
	}
	return nil
}

func (s *Server) deviceDownLocked(v *volume) {
	node, link := s.devicePaths(v)
	for _, p := range []string{link, node} {
		if p != "" {
			os.Remove(p)
		}
	}
	v.nvme = ""
}

func copyTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// apiError is an EC2 error answer.
type apiError struct {
	status        int
	code, message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func badRequest(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

// Handler returns the EC2 Query API handler.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveEC2)
}

func (s *Server) serveEC2(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, code: "UnsupportedOperation", message: "the EC2 stand-in takes POSTed forms only"})
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, badRequest("MalformedQueryString", "%v", err))
		return
	}
	f := r.PostForm
	action := f.Get("Action")
	s.log.Debug("ec2local request", "action", action)
	if v := f.Get("Version"); v != APIVersion {
		writeError(w, badRequest("InvalidParameterValue", "Version %q is not supported; want %s", v, APIVersion))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[action]++
	for i := range s.faults {
		ft := &s.faults[i]
		if ft.Action == "" || ft.Action == action {
			ft.Count--
			if ft.Count == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			writeError(w, &apiError{status: ft.Status, code: ft.Code, message: "injected by the test"})
			return
		}
	}
	s.advanceLocked()
	var (
		out any
		err *apiError
	)
	switch action {
	case "DescribeVolumes":
		out, err = s.describeVolumesLocked(f)
	case "CreateVolume":
		out, err = s.createVolumeLocked(f)
	case "AttachVolume":
		out, err = s.attachVolumeLocked(f)
	case "DetachVolume":
		out, err = s.detachVolumeLocked(f)
	case "DescribeInstances":
		out, err = s.describeInstancesLocked(f)
	case "CreateTags":
		out, err = s.createTagsLocked(f)
	default:
		err = badRequest("InvalidAction", "The action %s is not valid for this web service (the EC2 stand-in serves only the calls the volume provider uses).", action)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	b, merr := xml.Marshal(out)
	if merr != nil {
		writeError(w, &apiError{status: http.StatusInternalServerError, code: "InternalError", message: merr.Error()})
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Write([]byte(xml.Header))
	w.Write(b)
}

func writeError(w http.ResponseWriter, e *apiError) {
	type xmlErr struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	body := struct {
		XMLName   xml.Name `xml:"Response"`
		Errors    []xmlErr `xml:"Errors>Error"`
		RequestID string   `xml:"RequestID"`
	}{Errors: []xmlErr{{e.code, e.message}}, RequestID: "ec2local"}
	b, _ := xml.Marshal(body)
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.status)
	w.Write([]byte(xml.Header))
	w.Write(b)
}

// ---- request parsing ----

type form interface {
	Get(string) string
	Has(string) bool
}

// list returns prefix.1, prefix.2, ... until one is missing.
func list(f form, prefix string) []string {
	var out []string
	for i := 1; f.Has(prefix + "." + strconv.Itoa(i)); i++ {
		out = append(out, f.Get(prefix+"."+strconv.Itoa(i)))
	}
	return out
}

type filter struct {
	name   string
	values []string
}

func filters(f form) []filter {
	var out []filter
	for i := 1; ; i++ {
		p := "Filter." + strconv.Itoa(i)
		if !f.Has(p + ".Name") {
			return out
		}
		out = append(out, filter{name: f.Get(p + ".Name"), values: list(f, p+".Value")})
	}
}

// tagList reads prefix.N.Key / prefix.N.Value.
func tagList(f form, prefix string) map[string]string {
	out := map[string]string{}
	for i := 1; ; i++ {
		p := prefix + "." + strconv.Itoa(i)
		if !f.Has(p + ".Key") {
			return out
		}
		out[f.Get(p+".Key")] = f.Get(p + ".Value")
	}
}

func intParam(f form, name string) (int, *apiError) {
	if !f.Has(name) {
		return 0, nil
	}
	n, err := strconv.Atoi(f.Get(name))
	if err != nil {
		return 0, badRequest("InvalidParameterValue", "Value (%s) for parameter %s is invalid.", f.Get(name), name)
	}
	return n, nil
}

func contains(vals []string, v string) bool {
	for _, x := range vals {
		if x == v {
			return true
		}
	}
	return false
}

func tagFilter(tags map[string]string, name string, values []string) (matched, handled bool) {
	if k, ok := strings.CutPrefix(name, "tag:"); ok {
		v, has := tags[k]
		return has && contains(values, v), true
	}
	if name == "tag-key" {
		for _, k := range values {
			if _, ok := tags[k]; ok {
				return true, true
			}
		}
		return false, true
	}
	return false, false
}

// ---- XML shapes (the subset of EC2's that the SDK reads) ----

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func xmlTags(m map[string]string) []xmlTag {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]xmlTag, len(keys))
	for i, k := range keys {
		out[i] = xmlTag{k, m[k]}
	}
	return out
}

type xmlAttachment struct {
	VolumeID            string `xml:"volumeId"`
	InstanceID          string `xml:"instanceId"`
	Device              string `xml:"device"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type xmlVolume struct {
	VolumeID         string          `xml:"volumeId"`
	Size             int             `xml:"size"`
	AvailabilityZone string          `xml:"availabilityZone"`
	Status           string          `xml:"status"`
	CreateTime       string          `xml:"createTime"`
	Attachments      []xmlAttachment `xml:"attachmentSet>item"`
	Tags             []xmlTag        `xml:"tagSet>item"`
	VolumeType       string          `xml:"volumeType"`
	Iops             int             `xml:"iops,omitempty"`
	Encrypted        bool            `xml:"encrypted"`
}

const timeFormat = "2006-01-02T15:04:05.000Z"

func (v *volume) xml() xmlVolume {
	x := xmlVolume{VolumeID: v.id, Size: v.size, AvailabilityZone: v.az, Status: v.state,
		CreateTime: v.created.UTC().Format(timeFormat), Tags: xmlTags(v.tags), VolumeType: v.vtype, Iops: v.iops}
	if v.att != nil {
		x.Attachments = []xmlAttachment{v.att.xml(v.id)}
	}
	return x
}

func (a *attachment) xml(volumeID string) xmlAttachment {
	return xmlAttachment{VolumeID: volumeID, InstanceID: a.instance, Device: a.device, Status: a.state, AttachTime: a.at.UTC().Format(timeFormat)}
}

// ---- actions ----

func (s *Server) describeVolumesLocked(f form) (any, *apiError) {
	ids := list(f, "VolumeId")
	for _, id := range ids {
		if _, ok := s.volumes[id]; !ok {
			return nil, badRequest("InvalidVolume.NotFound", "The volume '%s' does not exist.", id)
		}
	}
	fs := filters(f)
	var match []*volume
	for _, id := range s.order {
		v := s.volumes[id]
		if len(ids) > 0 && !contains(ids, id) {
			continue
		}
		ok := true
		for _, fl := range fs {
			if m, handled := tagFilter(v.tags, fl.name, fl.values); handled {
				ok = ok && m
				continue
			}
			switch fl.name {
			case "volume-id":
				ok = ok && contains(fl.values, v.id)
			case "availability-zone":
				ok = ok && contains(fl.values, v.az)
			case "status":
				ok = ok && contains(fl.values, v.state)
			case "attachment.instance-id":
				ok = ok && v.att != nil && contains(fl.values, v.att.instance)
			default:
				return nil, badRequest("InvalidParameterValue", "The filter '%s' is invalid (the EC2 stand-in does not know it)", fl.name)
			}
		}
		if ok {
			match = append(match, v)
		}
	}
	start, max := 0, len(match)
	if tok := f.Get("NextToken"); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 || n > len(match) {
			return nil, badRequest("InvalidParameterValue", "The token '%s' is invalid.", tok)
		}
		start = n
	}
	mr, err := intParam(f, "MaxResults")
	if err != nil {
		return nil, err
	}
	if mr > 0 {
		if len(ids) > 0 {
			return nil, badRequest("InvalidParameterCombination", "The parameter volumeSet cannot be used with the parameter maxResults")
		}
		max = mr
	}
	if s.opts.PageSize > 0 && max > s.opts.PageSize {
		max = s.opts.PageSize
	}
	end := min(start+max, len(match))
	out := struct {
		XMLName   xml.Name    `xml:"http://ec2.amazonaws.com/doc/2016-11-15/ DescribeVolumesResponse"`
		RequestID string      `xml:"requestId"`
		Volumes   []xmlVolume `xml:"volumeSet>item"`
		NextToken string      `xml:"nextToken,omitempty"`
	}{RequestID: "ec2local"}
	for _, v := range match[start:end] {
		out.Volumes = append(out.Volumes, v.xml())
	}
	if end < len(match) {
		out.NextToken = strconv.Itoa(end)
	}
	return out, nil
}

func (s *Server) createVolumeLocked(f form) (any, *apiError) {
	token := f.Get("ClientToken")
	if id, ok := s.created[token]; ok && token != "" {
		// The same request again (a retry): the same volume, as EC2 answers.
		return createVolumeResponse(s.volumes[id]), nil
	}
	az := f.Get("AvailabilityZone")
	if az == "" {
		return nil, badRequest("MissingParameter", "The request must contain the parameter AvailabilityZone")
	}
	if !strings.HasPrefix(az, s.opts.Region) || len(az) <= len(s.opts.Region) {
		return nil, badRequest("InvalidParameterValue", "Invalid availability zone: [%s]", az)
	}
	size, err := intParam(f, "Size")
	if err != nil {
		return nil, err
	}
	if size < 1 || size > 16384 {
		return nil, badRequest("InvalidParameterValue", "Volume of %dGiB is out of range (1 to 16384)", size)
	}
	vtype := f.Get("VolumeType")
	if vtype == "" {
		vtype = "gp2"
	}
	iops, err := intParam(f, "Iops")
	if err != nil {
		return nil, err
	}
	switch vtype {
	case "gp2", "st1", "sc1", "standard":
		if iops != 0 {
			return nil, badRequest("InvalidParameterCombination", "The parameter iops is not supported for %s volumes.", vtype)
		}
	case "gp3", "io1", "io2":
		if vtype != "gp3" && iops == 0 {
			return nil, badRequest("MissingParameter", "The request must contain the parameter iops for %s volumes", vtype)
		}
		if vtype == "gp3" && iops == 0 {
			iops = 3000
		}
	default:
		return nil, badRequest("InvalidParameterValue", "Value (%s) for parameter volumeType is invalid.", vtype)
	}
	tags := map[string]string{}
	for i := 1; ; i++ {
		p := "TagSpecification." + strconv.Itoa(i)
		if !f.Has(p + ".ResourceType") {
			break
		}
		if rt := f.Get(p + ".ResourceType"); rt != "volume" {
			return nil, badRequest("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
		for k, v := range tagList(f, p+".Tag") {
			tags[k] = v
		}
	}
	state := VolumeCreating
	if s.opts.Delay == 0 {
		state = VolumeAvailable
	}
	v := s.newVolumeLocked(az, vtype, size, iops, tags, state)
	if token != "" {
		s.created[token] = v.id
	}
	return createVolumeResponse(v), nil
}

func createVolumeResponse(v *volume) any {
	x := v.xml()
	return struct {
		XMLName   xml.Name `xml:"http://ec2.amazonaws.com/doc/2016-11-15/ CreateVolumeResponse"`
		RequestID string   `xml:"requestId"`
		xmlVolume
	}{RequestID: "ec2local", xmlVolume: x}
}

var deviceName = func(d string) bool {
	// /dev/sd[f-p] or /dev/xvd[f-p] (with an optional second letter), the
	// names EC2 takes for EBS data volumes on Linux.
	base, ok := strings.CutPrefix(d, "/dev/sd")
	if !ok {
		base, ok = strings.CutPrefix(d, "/dev/xvd")
	}
	if !ok || len(base) < 1 || len(base) > 2 {
		return false
	}
	for _, c := range base {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

func (s *Server) attachVolumeLocked(f form) (any, *apiError) {
	vid, iid, dev := f.Get("VolumeId"), f.Get("InstanceId"), f.Get("Device")
	v, ok := s.volumes[vid]
	if !ok {
		return nil, badRequest("InvalidVolume.NotFound", "The volume '%s' does not exist.", vid)
	}
	in, ok := s.instances[iid]
	if !ok || in.state == InstanceTerminated {
		return nil, badRequest("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", iid)
	}
	if !deviceName(dev) {
		return nil, badRequest("InvalidParameterValue", "Value (%s) for parameter device is invalid. %s is not a valid EBS device name.", dev, dev)
	}
	if in.state != InstanceRunning && in.state != InstanceStopped {
		return nil, badRequest("IncorrectInstanceState", "The instance '%s' is not in a state from which it can attach a volume (%s).", iid, in.state)
	}
	if v.az != in.az {
		return nil, badRequest("InvalidVolume.ZoneMismatch", "The volume '%s' is not in the same availability zone as instance '%s'", vid, iid)
	}
	if v.att != nil {
		return nil, badRequest("VolumeInUse", "%s is already attached to an instance", vid)
	}
	if v.state != VolumeAvailable {
		return nil, badRequest("IncorrectState", "The volume '%s' is not 'available'.", vid)
	}
	for _, o := range s.volumes {
		if o.att != nil && o.att.instance == iid && o.att.device == dev {
			return nil, badRequest("InvalidParameterValue", "Invalid value '%s' for unixDevice. Attachment point %s is already in use", dev, dev)
		}
	}
	v.att = &attachment{instance: iid, device: dev, state: AttachAttaching, at: s.opts.Now()}
	v.state = VolumeInUse
	out := v.att.xml(vid)
	s.advanceLocked()
	return struct {
		XMLName   xml.Name `xml:"http://ec2.amazonaws.com/doc/2016-11-15/ AttachVolumeResponse"`
		RequestID string   `xml:"requestId"`
		xmlAttachment
	}{RequestID: "ec2local", xmlAttachment: out}, nil
}

func (s *Server) detachVolumeLocked(f form) (any, *apiError) {
	vid := f.Get("VolumeId")
	v, ok := s.volumes[vid]
	if !ok {
		return nil, badRequest("InvalidVolume.NotFound", "The volume '%s' does not exist.", vid)
	}
	if v.att == nil {
		return nil, badRequest("IncorrectState", "Volume '%s' is in the 'available' state.", vid)
	}
	if iid := f.Get("InstanceId"); iid != "" && iid != v.att.instance {
		return nil, badRequest("InvalidAttachment.NotFound", "Volume '%s' is not attached to instance '%s'", vid, iid)
	}
	if v.att.state != AttachDetaching {
		v.att.state, v.att.at = AttachDetaching, s.opts.Now()
	}
	out := v.att.xml(vid)
	s.advanceLocked()
	return struct {
		XMLName   xml.Name `xml:"http://ec2.amazonaws.com/doc/2016-11-15/ DetachVolumeResponse"`
		RequestID string   `xml:"requestId"`
		xmlAttachment
	}{RequestID: "ec2local", xmlAttachment: out}, nil
}

type xmlInstance struct {
	InstanceID string `xml:"instanceId"`
	State      struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	} `xml:"instanceState"`
	Placement struct {
		AvailabilityZone string `xml:"availabilityZone"`
	} `xml:"placement"`
	LaunchTime       string   `xml:"launchTime"`
	PrivateIPAddress string   `xml:"privateIpAddress,omitempty"`
	Tags             []xmlTag `xml:"tagSet>item"`
}

var stateCodes = map[string]int{"pending": 0, InstanceRunning: 16, "shutting-down": 32, InstanceTerminated: 48, "stopping": 64, InstanceStopped: 80}

func (s *Server) describeInstancesLocked(f form) (any, *apiError) {
	ids := list(f, "InstanceId")
	for _, id := range ids {
		if _, ok := s.instances[id]; !ok {
			return nil, badRequest("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
	}
	fs := filters(f)
	keys := make([]string, 0, len(s.instances))
	for id := range s.instances {
		keys = append(keys, id)
	}
	sort.Strings(keys)
	type reservation struct {
		ReservationID string        `xml:"reservationId"`
		Instances     []xmlInstance `xml:"instancesSet>item"`
	}
	out := struct {
		XMLName      xml.Name      `xml:"http://ec2.amazonaws.com/doc/2016-11-15/ DescribeInstancesResponse"`
		RequestID    string        `xml:"requestId"`
		Reservations []reservation `xml:"reservationSet>item"`
	}{RequestID: "ec2local"}
	for _, id := range keys {
		in := s.instances[id]
		if len(ids) > 0 && !contains(ids, id) {
			continue
		}
		ok := true
		for _, fl := range fs {
			if m, handled := tagFilter(in.tags, fl.name, fl.values); handled {
				ok = ok && m
				continue
			}
			switch fl.name {
			case "instance-id":
				ok = ok && contains(fl.values, in.id)
			case "instance-state-name":
				ok = ok && contains(fl.values, in.state)
			case "availability-zone":
				ok = ok && contains(fl.values, in.az)
			default:
				return nil, badRequest("InvalidParameterValue", "The filter '%s' is invalid (the EC2 stand-in does not know it)", fl.name)
			}
		}
		if !ok {
			continue
		}
		x := xmlInstance{InstanceID: in.id, LaunchTime: in.launched.UTC().Format(timeFormat), Tags: xmlTags(in.tags)}
		if in.state != InstanceTerminated {
			x.PrivateIPAddress = in.privateIP
		}
		x.State.Code, x.State.Name = stateCodes[in.state], in.state
		x.Placement.AvailabilityZone = in.az
		out.Reservations = append(out.Reservations, reservation{ReservationID: "r-" + strings.TrimPrefix(in.id, "i-"), Instances: []xmlInstance{x}})
	}
	return out, nil
}

func (s *Server) createTagsLocked(f form) (any, *apiError) {
	ids := list(f, "ResourceId")
	if len(ids) == 0 {
		return nil, badRequest("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	tags := tagList(f, "Tag")
	for _, id := range ids {
		switch {
		case s.volumes[id] != nil:
		case s.instances[id] != nil:
		default:
			return nil, badRequest("InvalidID", "The ID '%s' is not valid", id)
		}
	}
	for _, id := range ids {
		if v := s.volumes[id]; v != nil {
			for k, val := range tags {
				v.tags[k] = val
			}
		} else {
			for k, val := range tags {
				s.instances[id].tags[k] = val
			}
		}
	}
	return struct {
		XMLName   xml.Name `xml:"http://ec2.amazonaws.com/doc/2016-11-15/ CreateTagsResponse"`
		RequestID string   `xml:"requestId"`
		Return    bool     `xml:"return"`
	}{RequestID: "ec2local", Return: true}, nil
}
