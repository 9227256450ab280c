package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// Hash returns the sha256 (lowercase hex) of the canonical form of a
// *Cluster or *NodeConfig: a copy with defaults applied, encoded as JSON with
// object keys sorted and no insignificant whitespace. Two documents that mean
// the same thing (keys reordered, comments or whitespace changed, a default
// written out or left implicit) have the same Hash; any change of meaning
// changes it. doc is not modified.
//
// Hash identifies a configuration's meaning, for example to tell whether a
// node must re-converge. It is not what userdata pins: see FileHash.
func Hash(doc any) (string, error) {
	canon, err := Canonical(doc)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:]), nil
}

// Canonical returns the canonical JSON encoding that Hash digests.
func Canonical(doc any) ([]byte, error) {
	var cp any
	switch d := doc.(type) {
	case *Cluster:
		if d == nil {
			return nil, fmt.Errorf("canonical form of a nil *Cluster")
		}
		c := &Cluster{}
		if err := deepCopy(d, c); err != nil {
			return nil, err
		}
		c.SetDefaults()
		cp = c
	case *NodeConfig:
		if d == nil {
			return nil, fmt.Errorf("canonical form of a nil *NodeConfig")
		}
		n := &NodeConfig{}
		if err := deepCopy(d, n); err != nil {
			return nil, err
		}
		n.SetDefaults()
		cp = n
	default:
		return nil, fmt.Errorf("canonical form of a %T; want *config.Cluster or *config.NodeConfig", doc)
	}
	// Struct fields are encoded in declaration order; going through a
	// generic value sorts every object's keys, so the encoding does not
	// depend on the order of fields in the Go types either.
	raw, err := json.Marshal(cp)
	if err != nil {
		return nil, fmt.Errorf("encoding canonical form: %w", err)
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return nil, fmt.Errorf("encoding canonical form: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(generic); err != nil {
		return nil, fmt.Errorf("encoding canonical form: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func deepCopy(from, to any) error {
	raw, err := json.Marshal(from)
	if err != nil {
		return fmt.Errorf("copying configuration: %w", err)
	}
	if err := json.Unmarshal(raw, to); err != nil {
		return fmt.Errorf("copying configuration: %w", err)
	}
	return nil
}

// FileHash returns the sha256 (lowercase hex) of a configuration file's raw
// bytes. This is what a node's userdata pins: nodeup fetches the file from
// the state store and compares FileHash of the bytes with the pinned value
// before it parses anything, so a file changed behind the node's back is
// refused without ever being interpreted. Any byte change, even a comment,
// changes FileHash; use Hash to compare meaning.
func FileHash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// HashMismatchError says a configuration file's bytes do not have the
// sha256 pinned for it (in userdata, for a node configuration).
type HashMismatchError struct {
	Source string // file name or URL
	Pinned string // the expected FileHash
	Actual string // FileHash of the bytes read
}

func (e *HashMismatchError) Error() string {
	return fmt.Sprintf("%s: sha256 %s does not match the pinned sha256 %s; the configuration was changed after the pin was made", e.Source, e.Actual, e.Pinned)
}

// CheckFileHash compares FileHash(data) with a pinned hash (lowercase or
// uppercase hex) and returns a *HashMismatchError naming both when they
// differ. Call it before parsing.
func CheckFileHash(data []byte, pinned, source string) error {
	actual := FileHash(data)
	if !strings.EqualFold(actual, pinned) {
		return &HashMismatchError{Source: source, Pinned: pinned, Actual: actual}
	}
	return nil
}
