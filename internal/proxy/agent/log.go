package agent

import (
	"slices"
	"strconv"
	"time"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// maxLoggedPorts bounds how many changed service ports one sync's log line
// names; the rest are counted.
const maxLoggedPorts = 20

// logSync says what a successful sync did. At -v=2: full or partial, how
// many service ports changed, how many the plan holds, how long it took.
// At -v=4 also which service ports changed, "removed" marking those that
// went away.
func (a *Agent) logSync(p *plan.Plan, ch plan.Changes, took time.Duration) {
	kind := "partial"
	if ch.Full {
		kind = "full"
	}
	kv := []any{"sync", kind, "changed", len(ch.Keys), "servicePorts", len(p.Ports), "took", took}
	if v := a.opts.Log.V(4); v.Enabled() {
		v.Info("Synced", append(kv, "ports", changedPorts(ch))...)
		return
	}
	a.opts.Log.V(2).Info("Synced", kv...)
}

// changedPorts names the changed service ports in key order, as
// "ns/name:port/TCP IPv4", at most maxLoggedPorts of them.
func changedPorts(ch plan.Changes) []string {
	keys := make([]plan.Key, 0, len(ch.Keys))
	for k := range ch.Keys {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y plan.Key) int {
		if x.Less(y) {
			return -1
		}
		if y.Less(x) {
			return 1
		}
		return 0
	})
	out := make([]string, 0, min(len(keys), maxLoggedPorts+1))
	for i, k := range keys {
		if i == maxLoggedPorts {
			out = append(out, "and "+strconv.Itoa(len(keys)-i)+" more")
			break
		}
		name := k.String()
		if _, gone := ch.Removed[k]; gone {
			name += " (removed)"
		}
		out = append(out, name)
	}
	return out
}
