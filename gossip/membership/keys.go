package membership

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
	"gopkg.in/yaml.v3"

	"github.com/kopsnode/agents/pkg/store"
)

// KeySet is the gossip keyring document stored at
// <cluster>/secrets/gossip-keys:
//
//	primary: <base64 key used to encrypt>
//	keys: [<base64 key>, ...]   # every key accepted when decrypting
//
// Keys are 16, 24 or 32 bytes (AES-128/192/256). The primary is always
// accepted, whether or not it is listed in keys.
type KeySet struct {
	Primary string   `yaml:"primary" json:"primary"`
	Keys    []string `yaml:"keys,omitempty" json:"keys,omitempty"`
}

// Decode returns the primary key and every key (primary first), checking
// each; errors name the field and the source.
func (k KeySet) Decode(source string) (primary []byte, all [][]byte, err error) {
	primary, err = decodeKey(k.Primary)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: primary: %w", source, err)
	}
	all = [][]byte{primary}
	for i, s := range k.Keys {
		b, err := decodeKey(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: keys[%d]: %w", source, i, err)
		}
		dup := false
		for _, have := range all {
			dup = dup || bytes.Equal(have, b)
		}
		if !dup {
			all = append(all, b)
		}
	}
	return primary, all, nil
}

func decodeKey(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("empty key")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	if err := memberlist.ValidateKey(b); err != nil {
		return nil, err
	}
	return b, nil
}

// ParseKeySet decodes a keyring document (YAML or JSON) and checks it.
func ParseKeySet(data []byte, source string) (KeySet, error) {
	var ks KeySet
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&ks); err != nil {
		return KeySet{}, fmt.Errorf("decoding gossip keys %s: %w", source, err)
	}
	if _, _, err := ks.Decode(source); err != nil {
		return KeySet{}, err
	}
	return ks, nil
}

// KeySource supplies the keyring. Version changes whenever the keys do.
type KeySource interface {
	Load(ctx context.Context) (KeySet, string, error)
	// Version returns the current version cheaply (a stat), so a watcher
	// can poll without reading the keys.
	Version(ctx context.Context) (string, error)
	String() string
}

// StoreKeys reads the keyring from a state store object.
type StoreKeys struct {
	Store store.Store
	// Key is the object key, normally "<cluster>/secrets/gossip-keys".
	Key string
}

// KeysObject returns the key of a cluster's gossip keyring in the store.
func KeysObject(cluster string) string { return cluster + "/secrets/gossip-keys" }

func (s StoreKeys) String() string { return store.JoinURL(s.Store.URL(), s.Key) }

// Load reads and checks the keyring.
func (s StoreKeys) Load(ctx context.Context) (KeySet, string, error) {
	b, info, err := store.ReadAll(ctx, s.Store, s.Key)
	if err != nil {
		return KeySet{}, "", fmt.Errorf("reading gossip keys: %w", err)
	}
	ks, err := ParseKeySet(b, s.String())
	return ks, string(info.Version), err
}

// Version stats the keyring object.
func (s StoreKeys) Version(ctx context.Context) (string, error) {
	info, err := s.Store.Stat(ctx, s.Key)
	if err != nil {
		return "", fmt.Errorf("checking gossip keys: %w", err)
	}
	return string(info.Version), nil
}

// WriteKeys stores a keyring document, for the tools that create and rotate keys.
func WriteKeys(ctx context.Context, s store.Store, key string, ks KeySet) error {
	_, err := PutKeys(ctx, s, key, ks, store.Condition{})
	return err
}

// PutKeys checks and stores a keyring document subject to cond
// (create-if-absent or compare-and-swap) and returns the written object's
// info. A failed condition returns an error wrapping store.ErrPrecondition.
func PutKeys(ctx context.Context, s store.Store, key string, ks KeySet, cond store.Condition) (store.Info, error) {
	if _, _, err := ks.Decode(store.JoinURL(s.URL(), key)); err != nil {
		return store.Info{}, err
	}
	b, err := yaml.Marshal(ks)
	if err != nil {
		return store.Info{}, err
	}
	info, err := s.Put(ctx, key, bytes.NewReader(b), cond)
	if err != nil {
		return store.Info{}, fmt.Errorf("writing gossip keys: %w", err)
	}
	return info, nil
}

// applyKeys brings a live keyring to ks without dropping traffic: new keys
// are added first, then the primary switched, then old keys removed.
func applyKeys(kr *memberlist.Keyring, ks KeySet, source string) error {
	primary, all, err := ks.Decode(source)
	if err != nil {
		return err
	}
	for _, k := range all {
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("adding a gossip key from %s: %w", source, err)
		}
	}
	if err := kr.UseKey(primary); err != nil {
		return fmt.Errorf("switching the primary gossip key from %s: %w", source, err)
	}
	for _, have := range kr.GetKeys() {
		keep := false
		for _, k := range all {
			keep = keep || bytes.Equal(k, have)
		}
		if !keep {
			if err := kr.RemoveKey(have); err != nil {
				return fmt.Errorf("removing a gossip key no longer in %s: %w", source, err)
			}
		}
	}
	return nil
}
