package units

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// Manager drives systemd. Reads (ActiveState) are safe in a dry run; the
// others change the machine and are only called from a task's Apply.
type Manager interface {
	// ActiveState returns "active", "inactive", "failed", "activating", ...
	ActiveState(ctx context.Context, unit string) (string, error)
	DaemonReload(ctx context.Context) error
	// Enable enables a unit file (creating its [Install] symlinks).
	Enable(ctx context.Context, unit string) error
	// Start starts a unit and waits for the job to finish.
	Start(ctx context.Context, unit string) error
	// Restart restarts a unit and waits for the job to finish.
	Restart(ctx context.Context, unit string) error
	Close() error
}

// Booted reports whether the running system was booted with systemd
// (sd_booted: /run/systemd/system exists).
func Booted() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// DBus is a Manager over systemd's D-Bus API. It connects lazily, to
// systemd's private socket when running as root (works without a bus
// daemon) and to the system bus otherwise.
type DBus struct {
	mu   sync.Mutex // guards conn
	conn *sdbus.Conn
}

// NewDBus returns a Manager that connects on first use.
func NewDBus() *DBus { return &DBus{} }

func (d *DBus) c(ctx context.Context) (*sdbus.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil && d.conn.Connected() {
		return d.conn, nil
	}
	// The connection outlives the call that opens it: go-systemd closes a
	// connection when the context it was opened with ends, which would cut
	// off every other task (and the job signals they wait on). ctx bounds
	// only the calls made on the connection; Close ends it.
	connCtx := context.WithoutCancel(ctx)
	type result struct {
		conn *sdbus.Conn
		err  error
	}
	done := make(chan result, 1)
	// The handshake takes no context: a hung bus must not hang the caller
	// (nodeup status bounds every check), so the wait is bounded by ctx and
	// a late connection is closed.
	go func() {
		var conn *sdbus.Conn
		var err error
		if os.Geteuid() == 0 {
			conn, err = sdbus.NewSystemdConnectionContext(connCtx)
		}
		if conn == nil {
			var err2 error
			if conn, err2 = sdbus.NewSystemConnectionContext(connCtx); err2 != nil {
				err = fmt.Errorf("connecting to systemd over D-Bus: %w", errors.Join(err, err2))
			} else {
				err = nil
			}
		}
		done <- result{conn, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		d.conn = r.conn
		return r.conn, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("connecting to systemd over D-Bus: %w", ctx.Err())
	}
}

// UnitState is what systemd says about a unit.
type UnitState struct {
	LoadState   string
	ActiveState string
	SubState    string
	// Result is the service's last result (services only).
	Result string
	// Since is when the unit's state last changed (StateChangeTimestamp).
	Since time.Time
}

// UnitState reads a unit's load, active and sub state, when it last
// changed, and a service's last result.
func (d *DBus) UnitState(ctx context.Context, unit string) (UnitState, error) {
	c, err := d.c(ctx)
	if err != nil {
		return UnitState{}, err
	}
	p, err := c.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return UnitState{}, fmt.Errorf("reading the state of %s over D-Bus: %w", unit, err)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	st := UnitState{
		LoadState:   str(p["LoadState"]),
		ActiveState: str(p["ActiveState"]),
		SubState:    str(p["SubState"]),
	}
	if us, ok := p["StateChangeTimestamp"].(uint64); ok && us > 0 {
		st.Since = time.UnixMicro(int64(us))
	}
	if strings.HasSuffix(unit, ".service") && st.LoadState == "loaded" {
		r, err := c.GetUnitTypePropertyContext(ctx, unit, "Service", "Result")
		if err != nil {
			return st, fmt.Errorf("reading the result of %s over D-Bus: %w", unit, err)
		}
		st.Result = str(r.Value.Value())
	}
	return st, nil
}

func (d *DBus) ActiveState(ctx context.Context, unit string) (string, error) {
	c, err := d.c(ctx)
	if err != nil {
		return "", err
	}
	p, err := c.GetUnitPropertyContext(ctx, unit, "ActiveState")
	if err != nil {
		return "", fmt.Errorf("reading ActiveState of %s: %w", unit, err)
	}
	s, _ := p.Value.Value().(string)
	return s, nil
}

func (d *DBus) DaemonReload(ctx context.Context) error {
	c, err := d.c(ctx)
	if err != nil {
		return err
	}
	if err := c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemd daemon-reload: %w", err)
	}
	return nil
}

func (d *DBus) Enable(ctx context.Context, unit string) error {
	c, err := d.c(ctx)
	if err != nil {
		return err
	}
	if _, _, err := c.EnableUnitFilesContext(ctx, []string{unit}, false, true); err != nil {
		return fmt.Errorf("enabling %s: %w", unit, err)
	}
	return nil
}

func (d *DBus) Start(ctx context.Context, unit string) error {
	return d.job(ctx, "start", unit, func(c *sdbus.Conn, ch chan string) (int, error) {
		return c.StartUnitContext(ctx, unit, "replace", ch)
	})
}

func (d *DBus) Restart(ctx context.Context, unit string) error {
	return d.job(ctx, "restart", unit, func(c *sdbus.Conn, ch chan string) (int, error) {
		return c.RestartUnitContext(ctx, unit, "replace", ch)
	})
}

func (d *DBus) job(ctx context.Context, verb, unit string, f func(*sdbus.Conn, chan string) (int, error)) error {
	c, err := d.c(ctx)
	if err != nil {
		return err
	}
	ch := make(chan string, 1)
	if _, err := f(c, ch); err != nil {
		return fmt.Errorf("%s %s: %w", verb, unit, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("%s %s: job %s (see journalctl -u %s)", verb, unit, res, unit)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: waiting for the job: %w", verb, unit, ctx.Err())
	}
}

// Close closes the connection; safe to call twice.
func (d *DBus) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	return nil
}
