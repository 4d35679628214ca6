package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// DiffDecisions lists how got differs from want: the action, the candidate
// endpoints (missing, unexpected, or listed twice, which makes the odds
// unequal), each candidate's masquerading, and the affinity timeout. Nil
// means they agree. Tracers are checked against the plan with it.
func DiffDecisions(want, got Decision) []string {
	var diffs []string
	if got.Action != want.Action {
		diffs = append(diffs, fmt.Sprintf("action %s, want %s", got.Action, want.Action))
	}
	gotN := map[netip.AddrPort]int{}
	for _, t := range got.Targets {
		gotN[t.Endpoint]++
	}
	wantSet := map[netip.AddrPort]bool{}
	var missing, extra, dup []string
	for _, t := range want.Targets {
		wantSet[t.Endpoint] = true
		if gotN[t.Endpoint] == 0 {
			missing = append(missing, t.Endpoint.String())
		}
	}
	for ep, n := range gotN {
		if !wantSet[ep] {
			extra = append(extra, ep.String())
		}
		if n > 1 {
			dup = append(dup, fmt.Sprintf("%s (%d times)", ep, n))
		}
	}
	slices.Sort(extra)
	slices.Sort(dup)
	for _, d := range []struct {
		what string
		eps  []string
	}{{"missing endpoints ", missing}, {"unexpected endpoints ", extra}, {"endpoints listed more than once (unequal odds) ", dup}} {
		if len(d.eps) > 0 {
			diffs = append(diffs, d.what+strings.Join(d.eps, ", "))
		}
	}
	diffs = append(diffs, diffMasquerade(want.Targets, got.Targets)...)
	if got.AffinitySeconds != want.AffinitySeconds {
		diffs = append(diffs, fmt.Sprintf("affinity %ds, want %ds", got.AffinitySeconds, want.AffinitySeconds))
	}
	if got.Scheduler != want.Scheduler {
		diffs = append(diffs, fmt.Sprintf("scheduler %s, want %s", schedulerName(got.Scheduler), schedulerName(want.Scheduler)))
	}
	return diffs
}

// diffMasquerade compares the masquerading of the candidates both have.
func diffMasquerade(want, got []Target) []string {
	var diffs []string
	for _, w := range want {
		for _, g := range got {
			if g.Endpoint == w.Endpoint && g.Masquerade != w.Masquerade {
				diffs = append(diffs, fmt.Sprintf("%s masquerade %v, want %v", w.Endpoint, g.Masquerade, w.Masquerade))
				break
			}
		}
	}
	return diffs
}

// schedulerName shows a decision's scheduler, "random" for none.
func schedulerName(s string) string {
	if s == "" {
		return "random"
	}
	return s
}
