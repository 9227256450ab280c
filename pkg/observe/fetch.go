package observe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxStatusBytes bounds a status document read by FetchStatus.
const MaxStatusBytes = 64 << 20

// FetchStatus reads a daemon's /status document at addr (host:port) into
// out, for the `status` commands. daemon names the daemon in errors (for
// example "protokube gossip"), so a refused connection says what is not
// running.
func FetchStatus(ctx context.Context, c *http.Client, addr, daemon string, out any) error {
	if c == nil {
		c = http.DefaultClient
	}
	url := "http://" + addr + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("reading %s status from %s (is `%s` running?): %w", daemon, url, daemon, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("reading %s status from %s: %s: %s", daemon, url, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxStatusBytes)).Decode(out); err != nil {
		return fmt.Errorf("decoding %s status from %s: %w", daemon, url, err)
	}
	return nil
}
