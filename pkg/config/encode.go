package config

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Marshal encodes a *Cluster or *NodeConfig as a YAML document that the
// decoders of this package read back to an equal value. Fields are written
// in the order of the Go types; unset optional fields are left out.
func Marshal(doc any) ([]byte, error) {
	switch d := doc.(type) {
	case *Cluster:
		if d == nil {
			return nil, fmt.Errorf("marshal: nil *Cluster")
		}
	case *NodeConfig:
		if d == nil {
			return nil, fmt.Errorf("marshal: nil *NodeConfig")
		}
	default:
		return nil, fmt.Errorf("marshal: a %T; want *config.Cluster or *config.NodeConfig", doc)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encoding YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding YAML: %w", err)
	}
	return buf.Bytes(), nil
}
