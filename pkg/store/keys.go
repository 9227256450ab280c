package store

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidKey is wrapped by errors about keys or prefixes that no backend
// accepts.
var ErrInvalidKey = errors.New("invalid key")

// ValidateKey checks that key is a relative slash-separated path without
// empty, "." or ".." segments, a leading slash, a trailing slash or control
// characters. Backends call it so that every backend accepts the same keys.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w %q: empty", ErrInvalidKey, key)
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("%w %q: must be relative (no leading slash)", ErrInvalidKey, key)
	}
	if strings.HasSuffix(key, "/") {
		return fmt.Errorf("%w %q: must not end with a slash", ErrInvalidKey, key)
	}
	return validatePath(key)
}

// ValidatePrefix checks a List prefix: empty, or a key-like string that may
// end with a slash.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if strings.HasPrefix(prefix, "/") {
		return fmt.Errorf("%w %q: must be relative (no leading slash)", ErrInvalidKey, prefix)
	}
	return validatePath(strings.TrimSuffix(prefix, "/"))
}

func validatePath(p string) error {
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w %q: control character", ErrInvalidKey, p)
		}
		if r == '\\' {
			return fmt.Errorf("%w %q: backslash", ErrInvalidKey, p)
		}
	}
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w %q: empty path segment", ErrInvalidKey, p)
		case ".", "..":
			return fmt.Errorf("%w %q: %q segment", ErrInvalidKey, p, seg)
		}
	}
	return nil
}
