package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/svcproxy/svcproxy/internal/proxy/conntrack"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Retry backoff after a failed sync: from minRetry doubling to syncPeriod.
const minRetry = time.Second

// Run waits for the source's initial state, then syncs until ctx ends.
// It returns nil when ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	for _, f := range a.opts.Families {
		if a.opts.Health != nil {
			a.opts.Health.Updated(f)
		}
		if a.opts.Metrics != nil {
			a.opts.Metrics.ShowFamily(f)
		}
	}
	if err := a.waitSynced(ctx); err != nil {
		return nil
	}
	r := runner{min: a.opts.MinSyncPeriod, max: a.opts.SyncPeriod, kick: a.kick}
	r.loop(ctx, func() error { return a.sync(ctx) })
	return nil
}

// runner calls fn when kicked, at most once per min and at least once per
// max, retrying failures with backoff.
type runner struct {
	min, max time.Duration
	kick     chan struct{}
}

func (r runner) loop(ctx context.Context, fn func() error) {
	var last, retryAt time.Time
	backoff := minRetry
	pending := true // the first sync runs at once
	timer := time.NewTimer(0)
	defer timer.Stop()
	for ctx.Err() == nil {
		if wait := time.Until(r.next(last, retryAt, pending)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-r.kick:
				pending = true
				continue
			case <-timer.C:
			}
		}
		select { // a kick that arrives from here on asks for another run
		case <-r.kick:
		default:
		}
		pending, last = false, time.Now()
		if err := fn(); err != nil {
			retryAt, backoff = last.Add(backoff), min(2*backoff, max(r.max, minRetry))
		} else {
			retryAt, backoff = time.Time{}, minRetry
		}
	}
}

// next is when the next run is due.
func (r runner) next(last, retryAt time.Time, pending bool) time.Time {
	due := last.Add(r.max)
	if pending {
		due = last.Add(r.min)
	}
	if !retryAt.IsZero() && retryAt.Before(due) {
		due = retryAt
	}
	return due
}

// sync brings the plan up to date and programs it.
func (a *Agent) sync(ctx context.Context) error {
	p, ch, triggers := a.takeChanges()
	start := time.Now()
	err := a.opts.Dataplane.Sync(ctx, p, ch)
	took := time.Since(start)
	a.record(ch.Full, start, took, err)
	if err != nil {
		if ctx.Err() != nil {
			return err // stopping: the sync was cut short, not failed
		}
		a.opts.Log.Error(err, "Sync failed; the retry will be full", "full", ch.Full, "took", took)
		a.mu.Lock()
		a.tracker.MarkFull()
		a.triggers = append(triggers, a.triggers...)
		a.mu.Unlock()
		return err
	}
	a.logSync(p, ch, took)
	a.afterSync(p, ch, triggers)
	return nil
}

// kickLoop wakes the loop for a sync, changes or not.
func (a *Agent) kickLoop() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// takeChanges takes what changed since the last sync.
func (a *Agent) takeChanges() (*plan.Plan, plan.Changes, []trigger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.config != nil {
		a.tracker.SetConfig(*a.config)
		a.config = nil
	}
	if time.Since(a.lastFull) >= FullSyncPeriod {
		a.tracker.MarkFull()
	}
	p, ch := a.tracker.Sync()
	a.current = p
	a.status.InProgress = true
	a.reportInvalid(a.tracker.Errors())
	if ch.Full {
		a.lastFull = time.Now()
	}
	triggers := a.triggers
	a.triggers = nil
	a.changes.services.pending, a.changes.endpoints.pending = 0, 0
	a.reportChanges()
	return p, ch, triggers
}

// reportInvalid logs each object the plan leaves out, once while it stays
// invalid: the error names the object and the field.
func (a *Agent) reportInvalid(errs []error) {
	now := map[string]bool{}
	for _, err := range errs {
		msg := err.Error()
		now[msg] = true
		if !a.reported[msg] {
			a.opts.Log.Error(err, "Ignoring an invalid object; the others are programmed")
		}
	}
	a.reported = now
}

// record notes one sync's outcome in the status and the metrics.
func (a *Agent) record(full bool, start time.Time, took time.Duration, err error) {
	a.mu.Lock()
	a.status.Syncs++
	if err != nil {
		a.status.Failures++
	}
	a.status.Last, a.status.Took, a.status.Full, a.status.Err = start, took, full, err
	a.status.InProgress = false
	a.mu.Unlock()
	if a.opts.Metrics != nil {
		for _, f := range a.opts.Families {
			a.opts.Metrics.SyncDone(f, full, took, err)
		}
	}
}

// afterSync does the duties that follow a successful sync.
func (a *Agent) afterSync(p *plan.Plan, ch plan.Changes, triggers []trigger) {
	now := time.Now()
	for _, f := range a.opts.Families {
		if a.opts.Health != nil {
			a.opts.Health.Updated(f)
		}
		if a.opts.Metrics != nil {
			internal, external := noLocalEndpoints(p, f)
			a.opts.Metrics.NoLocalEndpoints(f, internal, external)
		}
		if err := a.cleanConntrack(p, ch, f); err != nil {
			a.opts.Log.Error(err, "Conntrack cleanup failed", "ipFamily", f)
		}
	}
	if a.opts.Metrics != nil {
		for _, t := range triggers {
			a.opts.Metrics.NetworkProgrammed(t.family, t.at, now)
		}
	}
	if a.opts.Services != nil {
		if err := a.opts.Services.Sync(p); err != nil {
			a.opts.Log.Error(err, "Health check node ports")
		}
	}
	if r, ok := a.opts.Dataplane.(dataplane.Rechecker); ok {
		if d := r.RecheckAfter(); d > 0 {
			time.AfterFunc(d, a.kickLoop)
		}
	}
}

// cleanConntrack removes the UDP flows the sync made stale in family f.
func (a *Agent) cleanConntrack(p *plan.Plan, ch plan.Changes, f plan.Family) error {
	if a.opts.Conntrack == nil || !conntrack.NeedsClean(p, ch, f) {
		return nil
	}
	var removed []*plan.ServicePort
	for _, sp := range ch.Removed {
		if sp != nil && sp.Family == f {
			removed = append(removed, sp)
		}
	}
	n, err := a.opts.Conntrack.CleanUDP(p, f, removed...)
	if a.opts.Metrics != nil {
		a.opts.Metrics.ConntrackCleaned(f, n, err)
	}
	if err != nil {
		return fmt.Errorf("after deleting %d entries: %w", n, err)
	}
	return nil
}

// noLocalEndpoints counts the Services of family f with a Local traffic
// policy and no local endpoint, internal and external.
func noLocalEndpoints(p *plan.Plan, f plan.Family) (internal, external int) {
	for _, sp := range p.PortsOf(f) {
		in, ext := sp.NoLocalEndpoints()
		if in {
			internal++
		}
		if ext {
			external++
		}
	}
	return internal, external
}
