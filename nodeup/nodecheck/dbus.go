package nodecheck

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

// DBusUnits reads unit states over systemd's D-Bus API: systemd's private
// socket as root (no bus daemon needed), else the system bus. It connects
// on first use; Close ends the connection.
type DBusUnits struct {
	mu   sync.Mutex // guards conn
	conn *sdbus.Conn
}

// NewDBusUnits returns a reader that connects on first use.
func NewDBusUnits() *DBusUnits { return &DBusUnits{} }

func (d *DBusUnits) c(ctx context.Context) (*sdbus.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil && d.conn.Connected() {
		return d.conn, nil
	}
	// go-systemd closes a connection when the context it was opened with
	// ends; ctx bounds only this call's reads, Close ends the connection.
	connCtx := context.WithoutCancel(ctx)
	type result struct {
		conn *sdbus.Conn
		err  error
	}
	done := make(chan result, 1)
	// The handshake takes no context: a hung bus must not hang status,
	// so the wait is bounded by ctx (a late connection is closed).
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

// UnitState reads a unit's load, active and sub state, when it last
// changed, and a service's last result.
func (d *DBusUnits) UnitState(ctx context.Context, unit string) (UnitState, error) {
	c, err := d.c(ctx)
	if err != nil {
		return UnitState{}, err
	}
	p, err := c.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return UnitState{}, fmt.Errorf("reading the state of %s over D-Bus: %w", unit, err)
	}
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

func str(v any) string {
	s, _ := v.(string)
	return s
}

// Close ends the connection; safe to call twice.
func (d *DBusUnits) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	return nil
}
