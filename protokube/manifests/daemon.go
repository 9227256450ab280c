package manifests

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kopsnode/agents/pkg/observe"
)

// Daemon runs the reconcile loop until Close.
type Daemon struct {
	r      *Reconciler
	obs    *observe.Server
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Start builds the reconciler, serves the status endpoint if configured,
// and runs the loop in a goroutine that Close stops and waits for. The
// first pass runs at once; a pass that applied everything is followed by
// the next after cfg.Interval, any other after cfg.WaitInterval.
func Start(ctx context.Context, cfg Config, deps Deps) (*Daemon, error) {
	if deps.Registry == nil {
		deps.Registry = observe.NewRegistry()
	}
	r, err := NewReconciler(cfg, deps)
	if err != nil {
		return nil, err
	}
	d := &Daemon{r: r, done: make(chan struct{})}
	if cfg.StatusListen != "" {
		d.obs, err = observe.Start(observe.Config{
			Addr: cfg.StatusListen, Registry: deps.Registry, Health: r.health, Logger: r.log,
			Status: func(context.Context) (any, error) { return r.Status(), nil },
		})
		if err != nil {
			return nil, err
		}
	}
	ctx, d.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go d.loop(ctx)
	return d, nil
}

func (d *Daemon) loop(ctx context.Context) {
	defer close(d.done)
	t := time.NewTimer(0)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := d.pass(ctx)
		if st.Ready {
			failures = 0
		} else {
			failures++
		}
		t.Reset(nextDelay(d.r.cfg, failures))
	}
}

// nextDelay is Interval after a pass that applied everything; after
// failing passes it starts at WaitInterval and doubles up to Interval, so a
// starting API server is found quickly and a lasting error is not retried
// in a tight loop.
func nextDelay(cfg Config, failures int) time.Duration {
	if failures == 0 {
		return cfg.Interval
	}
	d := cfg.WaitInterval
	for i := 1; i < failures && d < cfg.Interval; i++ {
		d *= 2
	}
	return min(d, cfg.Interval)
}

// pass runs one pass, turning a panic into a logged error so that the loop
// goes on (the API's answers are outside our control).
func (d *Daemon) pass(ctx context.Context) (st Status) {
	defer func() {
		if p := recover(); p != nil {
			err := fmt.Errorf("manifests pass panicked: %v", p)
			d.r.log.Error("pass failed", "err", err)
			st = d.r.finish(d.r.now(), "", "", false, err, nil, nil)
		}
	}()
	return d.r.Pass(ctx)
}

// Status returns the current state.
func (d *Daemon) Status() Status { return d.r.Status() }

// StatusAddr is the status endpoint's address, or "" when none.
func (d *Daemon) StatusAddr() string {
	if d.obs == nil {
		return ""
	}
	return d.obs.Addr()
}

// Close stops the loop, waits for it, then stops the status server. Safe
// to call twice.
func (d *Daemon) Close() error {
	var err error
	d.once.Do(func() {
		d.cancel()
		<-d.done
		if d.obs != nil {
			err = d.obs.Close()
		}
	})
	return errors.Join(err)
}
