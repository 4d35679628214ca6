// Package agent is svcproxy's node agent: it receives Services,
// EndpointSlices and this node's Node from a source (the Kubernetes API or a
// directory of manifests), keeps the plan up to date, and runs the sync loop
// that programs the dataplane, as kube-proxy's proxier does.
//
// The loop is a bounded-frequency runner: a change is synced at once if the
// last sync is at least minSyncPeriod old, else when it becomes so; a sync
// runs at least every syncPeriod; a failed sync is retried with backoff and
// the retry is full. After each sync the agent reports health, metrics,
// health-check node ports and stale UDP conntrack entries.
package agent

import (
	"context"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/internal/proxy/conntrack"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/health"
	"github.com/svcproxy/svcproxy/internal/proxy/metrics"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// FullSyncPeriod is how often a sync re-renders everything even when
// nothing asked for it, repairing rules changed behind the agent's back.
const FullSyncPeriod = time.Hour

// Options configure an agent. Dataplane is required; a nil Health, Services,
// Metrics or Conntrack turns that duty off.
type Options struct {
	Plan     plan.Config
	Families []plan.Family
	// PrimaryNodePorts says nodePortAddresses is "primary": NodePorts are
	// accepted only on the Node's primary addresses (plan.PrimaryNodeIPs),
	// which become known when the Node arrives.
	PrimaryNodePorts bool
	// BindAddress, when valid, replaces the Node's primary address of its
	// family (kube-proxy's bindAddress).
	BindAddress netip.Addr
	// LocalFromPodCIDRs says detectLocalMode is NodeCIDR: traffic from the
	// Node's podCIDRs is pod traffic; Plan.ClusterCIDRs follows them.
	LocalFromPodCIDRs bool

	MinSyncPeriod time.Duration
	SyncPeriod    time.Duration

	Dataplane dataplane.Dataplane
	Conntrack *conntrack.Cleaner
	Health    *health.ProxyHealth
	Services  *health.ServiceHealth
	Metrics   *metrics.Metrics
	// Events records Events on Services (a scheduler the dataplane cannot
	// express); nil records none.
	Events Recorder
	// Log receives failures and warnings, and at -v=2 and -v=4 each sync;
	// the zero Logger means klog's.
	Log logr.Logger
}

// Agent is a source.Sink feeding the sync loop.
type Agent struct {
	opts Options
	kick chan struct{}

	mu       sync.Mutex
	tracker  *plan.Tracker
	config   *plan.Config // a new configuration for the next sync
	last     *plan.Config // the last configuration derived from the Node
	current  *plan.Plan   // the plan of the last sync; mutated only by sync
	synced   chan struct{}
	isSynced bool
	nodeSeen chan struct{} // closed when the first Node arrives
	changes  pending
	triggers []trigger
	lastFull time.Time
	status   Status
	reported map[string]bool // invalid-object errors already logged
	// schedReported holds the Services told of an unsupported scheduler,
	// with what they were told; used by the sync loop only.
	schedReported map[types.NamespacedName]string
}

// Status describes the last sync, for status pages and tests.
type Status struct {
	Syncs    int
	Failures int
	Last     time.Time
	Took     time.Duration
	Full     bool
	Err      error
	// InProgress says a sync of the plan WithPlan shows is under way: the
	// kernel may not hold all of that plan yet.
	InProgress bool
}

// trigger is when a change was made to an EndpointSlice, by its
// last-change-trigger-time annotation.
type trigger struct {
	family plan.Family
	at     time.Time
}

// AnnotationTriggerTime is set by the EndpointSlice controller to when the
// change that produced the slice happened (a Pod or Service update).
const AnnotationTriggerTime = v1.EndpointsLastChangeTriggerTime

// New returns an agent; Run starts its loop.
func New(opts Options) *Agent {
	if opts.Log.GetSink() == nil {
		opts.Log = klog.Background()
	}
	if len(opts.Families) == 0 {
		opts.Families = []plan.Family{plan.IPv4, plan.IPv6}
	}
	if opts.SyncPeriod <= 0 {
		opts.SyncPeriod = 30 * time.Second
	}
	return &Agent{
		opts:     opts,
		kick:     make(chan struct{}, 1),
		tracker:  plan.NewTracker(opts.Plan),
		synced:   make(chan struct{}),
		nodeSeen: make(chan struct{}),
	}
}

// SetService implements source.Sink.
func (a *Agent) SetService(svc *v1.Service) {
	a.change(func() { a.tracker.SetService(svc) }, &a.changes.services, serviceFamilies(svc), time.Time{})
}

// DeleteService implements source.Sink.
func (a *Agent) DeleteService(svc *v1.Service) {
	a.change(func() { a.tracker.DeleteService(svc.Namespace, svc.Name) }, &a.changes.services, serviceFamilies(svc), time.Time{})
}

// SetSlice implements source.Sink.
func (a *Agent) SetSlice(s *discovery.EndpointSlice) {
	a.change(func() { a.tracker.SetSlice(s) }, &a.changes.endpoints, sliceFamilies(s), triggerTime(s))
}

// DeleteSlice implements source.Sink.
func (a *Agent) DeleteSlice(s *discovery.EndpointSlice) {
	a.change(func() { a.tracker.DeleteSlice(s) }, &a.changes.endpoints, sliceFamilies(s), time.Time{})
}

// SetNode implements source.Sink: the Node's zone feeds topology, its
// deletion and autoscaler taint feed /healthz, and with "primary"
// nodePortAddresses its InternalIPs become the NodePort addresses.
func (a *Agent) SetNode(node *v1.Node) {
	if a.opts.Health != nil {
		a.opts.Health.SyncNode(node)
	}
	a.mu.Lock()
	a.tracker.SetNode(node)
	if node != nil {
		a.configFromNode(node)
		select {
		case <-a.nodeSeen:
		default:
			close(a.nodeSeen)
		}
	}
	a.mu.Unlock()
	a.queue(a.opts.Families)
}

// configFromNode takes what the configuration leaves to the Node: its
// InternalIPs as NodePort addresses ("primary"), its podCIDRs as the pod
// network (detectLocalMode NodeCIDR).
func (a *Agent) configFromNode(node *v1.Node) {
	cfg := a.opts.Plan
	if a.opts.PrimaryNodePorts {
		cfg.NodePortAddresses = nil
		for _, ip := range plan.PrimaryNodeIPs(node, a.opts.BindAddress) {
			cfg.NodePortAddresses = append(cfg.NodePortAddresses, netip.PrefixFrom(ip, ip.BitLen()))
		}
		if len(cfg.NodePortAddresses) == 0 {
			a.opts.Log.Info("Warning: the Node has no address; NodePorts are accepted on every local address", "node", node.Name)
		}
	}
	if a.opts.LocalFromPodCIDRs {
		cfg.ClusterCIDRs = nil
		for _, s := range node.Spec.PodCIDRs {
			if p, err := netip.ParsePrefix(s); err == nil {
				cfg.ClusterCIDRs = append(cfg.ClusterCIDRs, p.Masked())
			}
		}
	}
	if a.last == nil || !reflect.DeepEqual(*a.last, cfg) {
		a.config, a.last = &cfg, &cfg
	}
}

// Synced implements source.Sink: the first sync may run.
func (a *Agent) Synced() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.isSynced {
		a.isSynced = true
		close(a.synced)
	}
}

// change applies one object change to the tracker and asks for a sync.
func (a *Agent) change(apply func(), count *changeCount, fams []plan.Family, at time.Time) {
	a.mu.Lock()
	apply()
	count.pending++
	count.total++
	a.reportChanges()
	if !at.IsZero() {
		for _, f := range fams {
			a.triggers = append(a.triggers, trigger{family: f, at: at})
		}
	}
	a.mu.Unlock()
	a.queue(fams)
}

// reportChanges publishes the pending and total object changes. Called
// with a.mu held.
func (a *Agent) reportChanges() {
	if m := a.opts.Metrics; m != nil {
		m.ServiceChanges(a.changes.services.pending, a.changes.services.total)
		m.EndpointChanges(a.changes.endpoints.pending, a.changes.endpoints.total)
	}
}

// queue records a pending change per family and wakes the loop.
func (a *Agent) queue(fams []plan.Family) {
	for _, f := range fams {
		if a.opts.Health != nil {
			a.opts.Health.QueuedUpdate(f)
		}
		if a.opts.Metrics != nil {
			a.opts.Metrics.Queued(f)
		}
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Status returns a copy of the last sync's status.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

func serviceFamilies(svc *v1.Service) []plan.Family {
	var out []plan.Family
	for _, f := range svc.Spec.IPFamilies {
		out = append(out, familyOf(string(f)))
	}
	if len(out) == 0 {
		return []plan.Family{plan.IPv4, plan.IPv6}
	}
	return out
}

func sliceFamilies(s *discovery.EndpointSlice) []plan.Family {
	switch s.AddressType {
	case discovery.AddressTypeIPv4, discovery.AddressTypeIPv6:
		return []plan.Family{familyOf(string(s.AddressType))}
	}
	return nil
}

func familyOf(name string) plan.Family {
	if name == string(v1.IPv6Protocol) {
		return plan.IPv6
	}
	return plan.IPv4
}

// triggerTime reads a slice's last-change-trigger-time; zero if absent or
// malformed.
func triggerTime(s *discovery.EndpointSlice) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s.Annotations[AnnotationTriggerTime])
	return t
}

// pending counts object changes since the last sync, and in total.
type pending struct {
	services, endpoints changeCount
}

type changeCount struct{ pending, total int }

// NodeWait bounds how long the first sync waits for the Node when the
// configuration depends on it, as kube-proxy waits for its node's podCIDR.
const NodeWait = 30 * time.Second

// waitSynced blocks until the source delivered its initial state, and the
// Node if the configuration needs it.
func (a *Agent) waitSynced(ctx context.Context) error {
	select {
	case <-a.synced:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if !a.opts.PrimaryNodePorts && !a.opts.LocalFromPodCIDRs {
		return nil
	}
	select {
	case <-a.nodeSeen:
	case <-time.After(NodeWait):
		a.opts.Log.Info("Warning: no Node object yet; syncing without its addresses and podCIDRs", "waited", NodeWait)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return nil
}

// WithPlan calls fn with the plan of the last sync (nil before the first)
// and the sync status, under the agent's lock: fn must be quick and must
// not keep the plan, which the next sync changes.
func (a *Agent) WithPlan(fn func(p *plan.Plan, st Status)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fn(a.current, a.status)
}
