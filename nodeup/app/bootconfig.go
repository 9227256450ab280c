package app

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kopsnode/agents/pkg/config"
)

// BootConfig is what the bootstrap script writes to /etc/nodeup/boot.yaml and
// nodeup.service reads on every boot. The apply command's flags bind to the
// same fields; a flag given on the command line wins over the file.
type BootConfig struct {
	// Store is the state store URL (file:///..., s3://bucket/prefix, gs://...).
	Store   string `yaml:"store" json:"store"`
	Cluster string `yaml:"cluster" json:"cluster"`
	Group   string `yaml:"group" json:"group"`
	// ConfigHash pins the sha256 of the raw node configuration file.
	ConfigHash string `yaml:"configHash,omitempty" json:"configHash,omitempty"`
	// FollowUpdates lets the node apply a configuration whose hash differs
	// from the pinned one.
	FollowUpdates bool `yaml:"followUpdates,omitempty" json:"followUpdates,omitempty"`
	// Store endpoint settings for S3-compatible servers and emulators.
	StoreEndpoint  string `yaml:"storeEndpoint,omitempty" json:"storeEndpoint,omitempty"`
	StoreRegion    string `yaml:"storeRegion,omitempty" json:"storeRegion,omitempty"`
	StorePathStyle bool   `yaml:"storePathStyle,omitempty" json:"storePathStyle,omitempty"`
	// Root and Phase are normally left to their defaults ("/" and "all").
	Root  string `yaml:"root,omitempty" json:"root,omitempty"`
	Phase string `yaml:"phase,omitempty" json:"phase,omitempty"`
}

// LoadBootConfig reads a boot configuration strictly (unknown fields are errors).
func LoadBootConfig(path string) (*BootConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading boot configuration: %w", err)
	}
	return ParseBootConfig(b, path)
}

// ParseBootConfig decodes a boot configuration.
func ParseBootConfig(b []byte, source string) (*BootConfig, error) {
	var bc BootConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&bc); err != nil {
		return nil, fmt.Errorf("boot configuration %s: %w", source, err)
	}
	return &bc, nil
}

// Merge fills the fields of c that are empty from f (the file), so that
// flags win over the boot configuration.
func (c *BootConfig) Merge(f *BootConfig) {
	if f == nil {
		return
	}
	str := func(dst *string, src string) {
		if *dst == "" {
			*dst = src
		}
	}
	str(&c.Store, f.Store)
	str(&c.Cluster, f.Cluster)
	str(&c.Group, f.Group)
	str(&c.ConfigHash, f.ConfigHash)
	str(&c.StoreEndpoint, f.StoreEndpoint)
	str(&c.StoreRegion, f.StoreRegion)
	str(&c.Root, f.Root)
	str(&c.Phase, f.Phase)
	c.FollowUpdates = c.FollowUpdates || f.FollowUpdates
	c.StorePathStyle = c.StorePathStyle || f.StorePathStyle
}

// Validate reports every problem, naming the flag (and boot config field).
func (c *BootConfig) Validate() error {
	var errs []error
	if c.Store == "" {
		errs = append(errs, errors.New("--store (store): required"))
	}
	if c.Cluster == "" {
		errs = append(errs, errors.New("--cluster (cluster): required"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("--group (group): required"))
	}
	if c.ConfigHash != "" && !isHexSHA256(c.ConfigHash) {
		errs = append(errs, fmt.Errorf("--config-hash (configHash): %q is not a hex sha256", c.ConfigHash))
	}
	switch c.Phase {
	case "", "all", "bake", "boot":
	default:
		errs = append(errs, fmt.Errorf("--phase (phase): %q is not one of bake, boot, all", c.Phase))
	}
	for _, s := range []struct{ name, v string }{{"cluster", c.Cluster}, {"group", c.Group}} {
		if strings.ContainsAny(s.v, "/\\ ") || s.v == "." || s.v == ".." {
			errs = append(errs, fmt.Errorf("--%s (%s): %q is not a valid name", s.name, s.name, s.v))
		}
	}
	return errors.Join(errs...)
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// ConfigKey is the store key of a group's node configuration.
func ConfigKey(cluster, group string) string { return config.NodeConfigKey(cluster, group) }
