package nodecheck

import (
	"context"
	"time"

	units "github.com/kopsnode/agents/systemd-units"
)

// UnitState is what systemd says about a unit; units.DBus reads it.
type UnitState = units.UnitState

// UnitReader reads a unit's state (units.DBus over systemd's D-Bus API).
type UnitReader interface {
	UnitState(ctx context.Context, unit string) (UnitState, error)
}

// CheckUnits reads each unit's state, each read bounded by timeout; a unit
// whose state cannot be read is unknown, with the reason.
func CheckUnits(ctx context.Context, r UnitReader, names []string, timeout time.Duration) []Unit {
	out := make([]Unit, 0, len(names))
	for _, n := range names {
		u := Unit{Name: n}
		if r == nil {
			u.Unknown = "no way to read unit states"
			out = append(out, u)
			continue
		}
		uctx, cancel := context.WithTimeout(ctx, timeout)
		st, err := r.UnitState(uctx, n)
		cancel()
		if err != nil {
			u.Unknown = err.Error()
		} else {
			u.LoadState, u.ActiveState, u.SubState, u.Result = st.LoadState, st.ActiveState, st.SubState, st.Result
			if !st.Since.IsZero() {
				u.Since = st.Since.UTC()
			}
		}
		out = append(out, u)
	}
	return out
}
