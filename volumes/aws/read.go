package aws

import (
	"fmt"
	"io"
)

// readAll reads at most limit bytes; more is an error (metadata values are
// short, and a runaway answer must not fill memory).
func readAll(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("answer longer than %d bytes", limit)
	}
	return b, nil
}
