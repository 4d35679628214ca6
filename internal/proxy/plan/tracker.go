package plan

import (
	"reflect"
	"sort"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// LabelServiceName ties an EndpointSlice to its Service.
const LabelServiceName = discovery.LabelServiceName

// Changes says what a sync must render: everything, or only the listed
// service ports (changed, added or removed since the last sync).
type Changes struct {
	Full bool
	Keys map[Key]bool
	// Removed holds the last plan of each service port that is gone, for
	// cleanups that need its addresses (conntrack).
	Removed map[Key]*ServicePort
}

// Tracker holds the objects the plan is a function of and keeps the plan up
// to date, re-planning only the Services whose objects changed since the last
// Sync. Not safe for concurrent use.
type Tracker struct {
	cfg      Config
	node     nodeInfo
	services map[types.NamespacedName]*v1.Service
	slices   map[types.NamespacedName]map[string]*discovery.EndpointSlice // by Service
	owners   map[types.NamespacedName]types.NamespacedName                // Service of each slice, by slice
	dirty    map[types.NamespacedName]bool
	full     bool

	plan      *Plan
	byService map[types.NamespacedName][]Key
	errs      map[types.NamespacedName][]error
}

// NewTracker returns an empty tracker; its first Sync is full.
func NewTracker(cfg Config) *Tracker {
	return &Tracker{
		cfg:       cfg,
		services:  map[types.NamespacedName]*v1.Service{},
		slices:    map[types.NamespacedName]map[string]*discovery.EndpointSlice{},
		owners:    map[types.NamespacedName]types.NamespacedName{},
		dirty:     map[types.NamespacedName]bool{},
		full:      true,
		plan:      &Plan{Config: cfg, Ports: map[Key]*ServicePort{}},
		byService: map[types.NamespacedName][]Key{},
		errs:      map[types.NamespacedName][]error{},
	}
}

// SetService adds or updates a Service.
func (t *Tracker) SetService(svc *v1.Service) {
	if svc == nil {
		return
	}
	nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	t.services[nn] = svc
	t.dirty[nn] = true
}

// Service returns the Service the tracker holds, or nil.
func (t *Tracker) Service(namespace, name string) *v1.Service {
	return t.services[types.NamespacedName{Namespace: namespace, Name: name}]
}

// DeleteService removes a Service.
func (t *Tracker) DeleteService(namespace, name string) {
	nn := types.NamespacedName{Namespace: namespace, Name: name}
	delete(t.services, nn)
	t.dirty[nn] = true
}

// SetSlice adds or updates an EndpointSlice. Slices without a service-name
// label belong to no Service and are ignored. A slice whose label now names
// another Service, or none, stops serving the Service it named before.
func (t *Tracker) SetSlice(s *discovery.EndpointSlice) {
	if s == nil {
		return
	}
	id := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	nn, ok := sliceOwner(s)
	if old, had := t.owners[id]; had && (!ok || old != nn) {
		t.removeSlice(id, old)
	}
	if !ok {
		return
	}
	if t.slices[nn] == nil {
		t.slices[nn] = map[string]*discovery.EndpointSlice{}
	}
	t.slices[nn][s.Name] = s
	t.owners[id] = nn
	t.dirty[nn] = true
}

// DeleteSlice removes an EndpointSlice. It is found by namespace and name,
// so the object passed may be a stale copy.
func (t *Tracker) DeleteSlice(s *discovery.EndpointSlice) {
	if s == nil {
		return
	}
	id := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	if owner, ok := t.owners[id]; ok {
		t.removeSlice(id, owner)
	}
}

func (t *Tracker) removeSlice(id, owner types.NamespacedName) {
	delete(t.slices[owner], id.Name)
	if len(t.slices[owner]) == 0 {
		delete(t.slices, owner)
	}
	delete(t.owners, id)
	t.dirty[owner] = true
}

func sliceOwner(s *discovery.EndpointSlice) (types.NamespacedName, bool) {
	name := s.Labels[LabelServiceName]
	return types.NamespacedName{Namespace: s.Namespace, Name: name}, name != ""
}

// SetNode records this node's Node object. A change of zone re-plans
// everything, since topology depends on it.
func (t *Tracker) SetNode(node *v1.Node) {
	n := nodeInfo{name: t.cfg.NodeName}
	if node != nil {
		n.zone = node.Labels[v1.LabelTopologyZone]
	}
	if n != t.node {
		t.node = n
		t.full = true
	}
}

// SetConfig replaces the node's configuration (its addresses may become
// known only once its Node object arrives) and re-plans everything.
func (t *Tracker) SetConfig(cfg Config) {
	t.cfg = cfg
	t.plan.Config = cfg
	t.full = true
}

// MarkFull makes the next Sync re-plan and re-render everything (after a
// failed sync, or periodically).
func (t *Tracker) MarkFull() { t.full = true }

// Sync brings the plan up to date and reports what changed.
func (t *Tracker) Sync() (*Plan, Changes) {
	ch := Changes{Full: t.full, Keys: map[Key]bool{}, Removed: map[Key]*ServicePort{}}
	todo := t.dirty
	if t.full {
		todo = map[types.NamespacedName]bool{}
		for nn := range t.services {
			todo[nn] = true
		}
		for nn := range t.byService {
			todo[nn] = true
		}
	}
	t.plan.Zone = t.node.zone
	for nn := range todo {
		t.replan(nn, &ch)
	}
	t.dirty = map[types.NamespacedName]bool{}
	t.full = false
	return t.plan, ch
}

// replan recomputes one Service's ports and records which ones changed.
func (t *Tracker) replan(nn types.NamespacedName, ch *Changes) {
	ports, errs := buildService(t.services[nn], t.sliceList(nn), t.node, &t.cfg)
	if len(errs) > 0 {
		t.errs[nn] = errs
	} else {
		delete(t.errs, nn)
	}
	keep := map[Key]bool{}
	keys := make([]Key, 0, len(ports))
	for _, sp := range ports {
		keep[sp.Key] = true
		keys = append(keys, sp.Key)
		if old := t.plan.Ports[sp.Key]; old == nil || !reflect.DeepEqual(old, sp) {
			ch.Keys[sp.Key] = true
		}
		t.plan.Ports[sp.Key] = sp
	}
	for _, k := range t.byService[nn] {
		if !keep[k] {
			ch.Removed[k] = t.plan.Ports[k]
			delete(t.plan.Ports, k)
			ch.Keys[k] = true
		}
	}
	if len(keys) == 0 {
		delete(t.byService, nn)
	} else {
		t.byService[nn] = keys
	}
}

func (t *Tracker) sliceList(nn types.NamespacedName) []*discovery.EndpointSlice {
	m := t.slices[nn]
	out := make([]*discovery.EndpointSlice, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Errors returns the validation errors of the objects left out of the plan
// and of the fields planned as if unset (an invalid scheduler annotation),
// sorted.
func (t *Tracker) Errors() []error {
	var out []error
	nns := make([]types.NamespacedName, 0, len(t.errs))
	for nn := range t.errs {
		nns = append(nns, nn)
	}
	sort.Slice(nns, func(i, j int) bool { return nns[i].String() < nns[j].String() })
	for _, nn := range nns {
		out = append(out, t.errs[nn]...)
	}
	return out
}
