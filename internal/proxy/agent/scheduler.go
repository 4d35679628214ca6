package agent

import (
	"context"
	"maps"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Recorder records Events about API objects, best effort.
type Recorder interface {
	// Warning records a Warning Event about regarding.
	Warning(ctx context.Context, regarding v1.ObjectReference, reason, action, note string)
}

// ReasonSchedulerNotSupported is the reason of the Event on a Service
// whose chosen scheduler the dataplane cannot express.
const ReasonSchedulerNotSupported = "SchedulerNotSupported"

// reportSchedulers tells of every Service that chose a scheduler the
// dataplane cannot express (plan.Scheduling.Unsupported): a warning in the
// log and a Warning Event on the Service, once while it stays so, and
// the number of such service ports in the metrics after every sync.
func (a *Agent) reportSchedulers(ctx context.Context, p *plan.Plan) {
	now := map[types.NamespacedName]string{}
	ports := 0
	for _, sp := range p.Ports {
		if msg := sp.Scheduling.Unsupported; msg != "" {
			now[types.NamespacedName{Namespace: sp.Namespace, Name: sp.Name}] = msg
			ports++
		}
	}
	if a.opts.Metrics != nil {
		a.opts.Metrics.SchedulerNotSupported(ports)
	}
	names := slices.Collect(maps.Keys(now))
	slices.SortFunc(names, func(x, y types.NamespacedName) int { return strings.Compare(x.String(), y.String()) })
	for _, nn := range names {
		msg := now[nn]
		if a.schedReported[nn] == msg {
			continue
		}
		a.opts.Log.Info("Warning: a Service's scheduler cannot be expressed", "service", nn.String(), "reason", msg)
		if a.opts.Events != nil {
			a.opts.Events.Warning(ctx, a.serviceRef(nn), ReasonSchedulerNotSupported, "Sync", msg)
		}
	}
	a.schedReported = now
}

// serviceRef refers to a Service the tracker holds, with its UID, so that
// `kubectl describe service` finds the Event.
func (a *Agent) serviceRef(nn types.NamespacedName) v1.ObjectReference {
	ref := v1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: nn.Namespace, Name: nn.Name}
	a.mu.Lock()
	defer a.mu.Unlock()
	if svc := a.tracker.Service(nn.Namespace, nn.Name); svc != nil {
		ref.UID, ref.ResourceVersion = svc.UID, svc.ResourceVersion
	}
	return ref
}
