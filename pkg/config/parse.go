package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ParseCluster decodes, defaults and validates a Cluster document in one
// call. Validation problems carry the source and the position of the field
// (or of its nearest enclosing field when the field was defaulted). The
// error, if any, is an *Errors.
func ParseCluster(data []byte, source string) (*Cluster, error) {
	c, err := parse(data, source, KindCluster)
	if err != nil {
		return nil, err
	}
	return c.(*Cluster), nil
}

// ParseNodeConfig decodes, defaults and validates a NodeConfig document in
// one call. The error, if any, is an *Errors.
func ParseNodeConfig(data []byte, source string) (*NodeConfig, error) {
	n, err := parse(data, source, KindNodeConfig)
	if err != nil {
		return nil, err
	}
	return n.(*NodeConfig), nil
}

// Parse decodes, defaults and validates a document of either kind and
// returns a *Cluster or a *NodeConfig. The error, if any, is an *Errors.
func Parse(data []byte, source string) (any, error) {
	return parse(data, source, "")
}

func parse(data []byte, source, want string) (any, error) {
	d, err := decode(data, source, want)
	if err != nil {
		return nil, err
	}
	SetDefaults(d.doc)
	if err := Validate(d.doc); err != nil {
		var es *Errors
		if errors.As(err, &es) {
			for i := range *es {
				e := &(*es)[i]
				e.Source = source
				p := d.locate(e.Path)
				e.Line, e.Column = p.line, p.col
			}
			return nil, es.err()
		}
		return nil, err
	}
	return d.doc, nil
}

// locate finds the position of a field path's value or, for a field that
// was not in the document (it was defaulted or is missing), the key of its
// nearest enclosing field that was.
func (d *decoded) locate(path string) position {
	if p, ok := d.pos[path]; ok {
		return p
	}
	for {
		if p, ok := d.keyPos[path]; ok {
			return p
		}
		if p, ok := d.pos[path]; ok {
			return p
		}
		if path == "" {
			return position{}
		}
		cut := max(strings.LastIndex(path, "."), strings.LastIndex(path, "["))
		if cut < 0 {
			cut = 0
		}
		path = path[:cut]
	}
}

// ReadFile reads a configuration file, refusing one larger than
// MaxDocumentSize.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading configuration %s: %w", path, err)
	}
	if len(data) > MaxDocumentSize {
		return nil, &Errors{{Source: path, Msg: fmt.Sprintf("file is larger than the limit of %d bytes", MaxDocumentSize)}}
	}
	return data, nil
}

// LoadClusterFile reads, decodes, defaults and validates a Cluster file.
func LoadClusterFile(path string) (*Cluster, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseCluster(data, path)
}

// LoadNodeConfigFile reads, decodes, defaults and validates a NodeConfig
// file.
func LoadNodeConfigFile(path string) (*NodeConfig, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseNodeConfig(data, path)
}
