package dataplane

import (
	"fmt"
	"math"
	"net/netip"
	"slices"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// TracePath is one way a packet can go through a dataplane's rules, as its
// tracer walks them: every rule that matched, and where it ended. A random
// endpoint choice forks the trace, one path per candidate.
type TracePath struct {
	Steps           []string
	Action          plan.Action
	Endpoint        netip.AddrPort // after DNAT
	Masquerade      bool
	AffinitySeconds int32
	Probability     float64 // of this path among all
}

// probabilityTolerance absorbs the kernel's rounding of iptables'
// `statistic --probability` (11 decimal places).
const probabilityTolerance = 1e-6

// Decide sums up the paths of a trace as a plan decision, so that it can be
// compared with the plan's own. The paths must agree on the action and be
// equally likely: the plan promises a uniform choice.
func Decide(paths []TracePath) (plan.Decision, error) {
	if len(paths) == 0 {
		return plan.Decision{}, fmt.Errorf("no path")
	}
	d := plan.Decision{Action: paths[0].Action, AffinitySeconds: paths[0].AffinitySeconds}
	for _, p := range paths {
		if p.Action != d.Action {
			return d, fmt.Errorf("paths disagree: %s and %s", d.Action, p.Action)
		}
		if math.Abs(p.Probability-1/float64(len(paths))) > probabilityTolerance {
			return d, fmt.Errorf("path to %s has probability %.6f, not 1/%d", p.Endpoint, p.Probability, len(paths))
		}
		if p.Action == plan.Forward {
			d.Targets = append(d.Targets, plan.Target{Endpoint: p.Endpoint, Masquerade: p.Masquerade})
		}
	}
	slices.SortFunc(d.Targets, func(a, b plan.Target) int { return a.Endpoint.Compare(b.Endpoint) })
	return d, nil
}
