package ipvs

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Options configure Netlink and Fake alike.
type Options struct {
	// NetNS is the path of the network namespace to program (for
	// example /run/netns/NAME); "" is the caller's. Fake ignores it.
	NetNS string
	// Interface is the dummy interface holding State.Addresses;
	// "" means "kube-ipvs0", kube-proxy's.
	Interface string
	// SetPrefix starts the name of every set this layer owns: a set with
	// it that the State lacks is destroyed. "" means "KUBE-", so that a
	// node's `ipset list` reads as under kube-proxy.
	SetPrefix string
	// ExcludeCIDRs hold virtual servers that are not this layer's
	// (kube-proxy's ipvs.excludeCIDRs): Apply never deletes them.
	ExcludeCIDRs []netip.Prefix
	// GracePeriod bounds how long a removed real server stays with weight
	// 0 while it has connections; 0 means 2 minutes.
	GracePeriod time.Duration
	// DrainCheck is how soon Result asks to look again at draining real
	// servers; 0 means 5 seconds.
	DrainCheck time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// LocalTable and LocalRulePriority place State.LocalMark's policy
	// rule and route; 0 means table 0x4b50 ("KP") and priority 100.
	LocalTable, LocalRulePriority int
}

func (o Options) withDefaults() Options {
	if o.Interface == "" {
		o.Interface = "kube-ipvs0"
	}
	if o.SetPrefix == "" {
		o.SetPrefix = "KUBE-"
	}
	if o.GracePeriod == 0 {
		o.GracePeriod = 2 * time.Minute
	}
	if o.DrainCheck == 0 {
		o.DrainCheck = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LocalTable == 0 {
		o.LocalTable = 0x4b50
	}
	if o.LocalRulePriority == 0 {
		o.LocalRulePriority = 100
	}
	return o
}

// Result says what one Apply did and when to call it again.
type Result struct {
	// Ops are the changes made, in order.
	Ops []Op
	// Draining counts the real servers left with weight 0 and
	// connections, waiting to be deleted.
	Draining int
	// RecheckAfter, when above zero, is when Apply should run again to
	// delete the draining real servers whose time has come.
	RecheckAfter time.Duration
}

// kernel is what the applier needs of Netlink or Fake: read the state
// (or one service's real servers), make one change.
type kernel interface {
	read(ctx context.Context) (*observed, error)
	readReals(ctx context.Context, vs *VirtualServer) (map[netip.AddrPort]*observedReal, error)
	do(ctx context.Context, op Op) error
}

// applier is the Apply of Netlink and Fake: validate, read, plan, do. It
// remembers since when each removed real server has been draining.
type applier struct {
	opts     Options
	mu       sync.Mutex
	draining map[realKey]time.Time
}

func newApplier(opts Options) applier {
	return applier{opts: opts.withDefaults(), draining: map[realKey]time.Time{}}
}

// apply makes k hold s. A State that does not validate changes nothing;
// a failed change stops the apply and is returned with the changes made
// before it. Apply reads the kernel every time, so the next one repairs
// whatever a failure left.
func (a *applier) apply(ctx context.Context, k kernel, s State) (Result, error) {
	if err := s.Validate(a.opts.SetPrefix); err != nil {
		return Result{}, fmt.Errorf("ipvs: refusing the state: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	have, err := k.read(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("ipvs: reading the kernel: %w", err)
	}
	return a.applyOver(ctx, k, s, have)
}

// applyChanges makes k go from prev, which it holds (the last state
// applied, with nothing draining), to next. Only what differs is planned
// (and validated): the services and sets that changed, the addresses;
// the kernel is read only for the real servers of the services that lose
// some (their connections decide how they go).
func (a *applier) applyChanges(ctx context.Context, k kernel, prev, next State) (Result, error) {
	want, had := changed(prev, next)
	if err := want.Validate(a.opts.SetPrefix); err != nil {
		return Result{}, fmt.Errorf("ipvs: refusing the state: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.draining) > 0 {
		return Result{}, fmt.Errorf("ipvs: %d real servers draining: the kernel must be read", len(a.draining))
	}
	have := observedOf(had)
	wanted := map[serviceKey][]RealServer{}
	for _, vs := range want.Services {
		wanted[vs.key()] = vs.Reals
	}
	for key, svc := range have.services {
		if losesReals(svc, wanted[key]) {
			reals, err := k.readReals(ctx, &svc.vs)
			if err != nil {
				return Result{}, fmt.Errorf("ipvs: reading the real servers of %s: %w", key, err)
			}
			svc.reals = reals
		}
	}
	return a.applyOver(ctx, k, want, have)
}

// changed returns the parts of next and of prev that differ: the services
// and sets each has that the other lacks or holds otherwise, with all the
// addresses and the local routing of each.
func changed(prev, next State) (want, had State) {
	want = State{Addresses: next.Addresses, LocalMark: next.LocalMark, LocalFamilies: next.LocalFamilies}
	had = State{Addresses: prev.Addresses, LocalMark: prev.LocalMark, LocalFamilies: prev.LocalFamilies}
	before := map[serviceKey]*VirtualServer{}
	for i := range prev.Services {
		before[prev.Services[i].key()] = &prev.Services[i]
	}
	for _, vs := range next.Services {
		old, ok := before[vs.key()]
		delete(before, vs.key())
		if ok && old.sameSettings(&vs) && slices.Equal(old.Reals, vs.Reals) {
			continue
		}
		want.Services = append(want.Services, vs)
		if ok {
			had.Services = append(had.Services, *old)
		}
	}
	for _, old := range before {
		had.Services = append(had.Services, *old)
	}
	sets := map[string]*Set{}
	for i := range prev.Sets {
		sets[prev.Sets[i].Name] = &prev.Sets[i]
	}
	for _, set := range next.Sets {
		old, ok := sets[set.Name]
		delete(sets, set.Name)
		if ok && old.Type == set.Type && old.Family == set.Family && slices.Equal(old.Entries, set.Entries) {
			continue
		}
		want.Sets = append(want.Sets, set)
		if ok {
			had.Sets = append(had.Sets, *old)
		}
	}
	for _, old := range sets {
		had.Sets = append(had.Sets, *old)
	}
	return want, had
}

// losesReals reports whether a service has a real server that want lacks.
func losesReals(svc *observedService, want []RealServer) bool {
	kept := map[netip.AddrPort]bool{}
	for _, rs := range want {
		kept[rs.addrPort()] = true
	}
	for ap := range svc.reals {
		if !kept[ap] {
			return true
		}
	}
	return false
}

// observedOf is what a kernel holding s reads as: the interface, and no
// connection.
func observedOf(s State) *observed {
	o := newObserved()
	o.interfaceExists = true
	o.addresses = slices.Clone(s.Addresses)
	for _, vs := range s.Services {
		svc := &observedService{vs: vs, reals: map[netip.AddrPort]*observedReal{}}
		svc.vs.Reals = nil
		for _, rs := range vs.Reals {
			svc.reals[rs.addrPort()] = &observedReal{RealServer: rs}
		}
		o.services[vs.key()] = svc
	}
	for _, set := range s.Sets {
		os := &observedSet{set: set, entries: map[string]Entry{}}
		os.set.Entries = nil
		for _, e := range set.Entries {
			os.entries[e.String(set.Type)] = e
		}
		o.sets[set.Name] = os
	}
	for _, f := range s.LocalFamilies {
		o.localMarks[f] = s.LocalMark
	}
	return o
}

// applyOver plans s over have and makes the changes; a.mu is held.
func (a *applier) applyOver(ctx context.Context, k kernel, s State, have *observed) (Result, error) {
	p := &planner{opts: a.opts, now: a.opts.Now(), draining: a.draining, nextDraining: map[realKey]time.Time{}}
	ops := p.plan(&s, have)
	var res Result
	for _, op := range ops {
		if err := k.do(ctx, op); err != nil {
			return res, fmt.Errorf("ipvs: %s: %w", op, err)
		}
		res.Ops = append(res.Ops, op)
	}
	a.draining = p.nextDraining
	res.Draining = len(p.nextDraining)
	res.RecheckAfter = p.recheck
	return res, nil
}

// observed is the kernel's state as read: a State with the connection
// counts of real servers, indexed.
type observed struct {
	interfaceExists bool
	addresses       []netip.Addr
	services        map[serviceKey]*observedService
	sets            map[string]*observedSet
	// localMarks are the LocalMark of each family's policy rule and route,
	// where both are there.
	localMarks map[Family]uint32
}

type observedService struct {
	vs    VirtualServer // without Reals
	reals map[netip.AddrPort]*observedReal
}

type observedReal struct {
	RealServer
	active, inactive int
}

type observedSet struct {
	set     Set // without Entries
	entries map[string]Entry
}

func newObserved() *observed {
	return &observed{services: map[serviceKey]*observedService{}, sets: map[string]*observedSet{}, localMarks: map[Family]uint32{}}
}

// realKey names a real server of a virtual server.
type realKey struct {
	service serviceKey
	real    netip.AddrPort
}

// planner works out the changes that take the kernel from have to want.
type planner struct {
	opts     Options
	now      time.Time
	draining map[realKey]time.Time // since when each real server has drained, before this apply
	// Results.
	ops          []Op
	nextDraining map[realKey]time.Time
	recheck      time.Duration
}

// plan returns the changes in the order they are safe to make: services
// before the addresses that lead to them, addresses gone before their
// services, sets last.
func (p *planner) plan(want *State, have *observed) []Op {
	if !have.interfaceExists {
		p.add(Op{Kind: CreateInterface})
	}
	wanted := map[serviceKey]bool{}
	for _, vs := range sortedServices(want.Services) {
		wanted[vs.key()] = true
		p.service(vs, have.services[vs.key()])
	}
	wantAddrs := map[netip.Addr]bool{}
	for _, a := range want.Addresses {
		wantAddrs[a] = true
	}
	for _, a := range sortedAddrs(have.addresses) {
		if !wantAddrs[a] {
			p.add(Op{Kind: DeleteAddress, Address: a})
		}
	}
	for _, key := range slices.SortedFunc(maps.Keys(have.services), compareServiceKeys) {
		if !wanted[key] && !p.excluded(key.AddrPort.Addr()) {
			vs := have.services[key].vs
			p.add(Op{Kind: DeleteService, Service: &vs})
		}
	}
	had := map[netip.Addr]bool{}
	for _, a := range have.addresses {
		had[a] = true
	}
	for _, a := range sortedAddrs(want.Addresses) {
		if !had[a] {
			p.add(Op{Kind: AddAddress, Address: a})
		}
	}
	p.sets(want.Sets, have.sets)
	for _, f := range []Family{IPv4, IPv6} {
		mark := want.LocalMark
		if !slices.Contains(want.LocalFamilies, f) {
			mark = 0
		}
		if cur := have.localMarks[f]; cur != mark {
			if cur != 0 {
				p.add(Op{Kind: DeleteLocalRouting, Family: f, Mark: cur})
			}
			if mark != 0 {
				p.add(Op{Kind: AddLocalRouting, Family: f, Mark: mark})
			}
		}
	}
	return p.ops
}

func (p *planner) add(op Op) { p.ops = append(p.ops, op) }

func (p *planner) excluded(a netip.Addr) bool {
	return slices.ContainsFunc(p.opts.ExcludeCIDRs, func(c netip.Prefix) bool { return c.Contains(a) })
}

// service plans one wanted virtual server against what the kernel has.
func (p *planner) service(vs *VirtualServer, have *observedService) {
	settings := *vs
	settings.Reals = nil
	if have == nil {
		p.add(Op{Kind: AddService, Service: &settings})
		for _, rs := range sortedReals(vs.Reals) {
			p.add(Op{Kind: AddReal, Service: &settings, Real: rs})
		}
		return
	}
	if !vs.sameSettings(&have.vs) {
		p.add(Op{Kind: UpdateService, Service: &settings})
	}
	wanted := map[netip.AddrPort]bool{}
	for _, rs := range sortedReals(vs.Reals) {
		wanted[rs.addrPort()] = true
		switch cur := have.reals[rs.addrPort()]; {
		case cur == nil:
			p.add(Op{Kind: AddReal, Service: &settings, Real: rs})
		case cur.Weight != rs.Weight:
			p.add(Op{Kind: UpdateReal, Service: &settings, Real: rs})
		}
	}
	for _, ap := range slices.SortedFunc(maps.Keys(have.reals), compareAddrPorts) {
		if !wanted[ap] {
			p.retire(&settings, have.reals[ap])
		}
	}
}

// retire plans the graceful removal of a real server the state no longer
// has: weight 0 while it has connections, deletion once it has none or
// the grace period has passed. UDP real servers go at once, as under
// kube-proxy: a UDP "connection" is only a timer, and one that outlives
// its endpoint sends a client's datagrams into the void.
func (p *planner) retire(vs *VirtualServer, cur *observedReal) {
	key := realKey{vs.key(), cur.addrPort()}
	since, wasDraining := p.draining[key]
	if !wasDraining {
		since = p.now
	}
	left := p.opts.GracePeriod - p.now.Sub(since)
	if vs.Protocol == UDP || cur.active+cur.inactive == 0 || left <= 0 {
		p.add(Op{Kind: DeleteReal, Service: vs, Real: cur.RealServer})
		return
	}
	if cur.Weight != 0 {
		drained := cur.RealServer
		drained.Weight = 0
		p.add(Op{Kind: DrainReal, Service: vs, Real: drained})
	}
	p.nextDraining[key] = since
	next := min(left, p.opts.DrainCheck)
	if p.recheck == 0 || next < p.recheck {
		p.recheck = next
	}
}

// sets plans the sets: create, fill and empty them entry by entry,
// destroy those of ours the state lacks. A set whose type or family
// changed is made anew.
func (p *planner) sets(want []Set, have map[string]*observedSet) {
	wanted := map[string]bool{}
	for _, set := range slices.SortedFunc(slices.Values(want), func(a, b Set) int { return cmp.Compare(a.Name, b.Name) }) {
		wanted[set.Name] = true
		header := set
		header.Entries = nil
		cur := have[set.Name]
		if cur != nil && (cur.set.Type != set.Type || cur.set.Family != set.Family) {
			p.add(Op{Kind: DestroySet, Set: &cur.set})
			cur = nil
		}
		if cur == nil {
			p.add(Op{Kind: CreateSet, Set: &header})
			cur = &observedSet{set: header}
		}
		p.entries(&header, set.Entries, cur.entries)
	}
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if !wanted[name] && len(name) >= len(p.opts.SetPrefix) && name[:len(p.opts.SetPrefix)] == p.opts.SetPrefix {
			p.add(Op{Kind: DestroySet, Set: &have[name].set})
		}
	}
}

func (p *planner) entries(set *Set, want []Entry, have map[string]Entry) {
	wanted := map[string]bool{}
	for _, e := range want {
		key := e.String(set.Type)
		wanted[key] = true
		switch cur, ok := have[key]; {
		case !ok:
			p.add(Op{Kind: AddEntry, Set: set, Entry: e})
		case cur.Comment != e.Comment:
			p.add(Op{Kind: ReplaceEntry, Set: set, Entry: e})
		}
	}
	for _, key := range slices.Sorted(maps.Keys(have)) {
		if !wanted[key] {
			p.add(Op{Kind: DeleteEntry, Set: set, Entry: have[key]})
		}
	}
}

func sortedServices(vss []VirtualServer) []*VirtualServer {
	out := make([]*VirtualServer, len(vss))
	for i := range vss {
		out[i] = &vss[i]
	}
	slices.SortFunc(out, func(a, b *VirtualServer) int { return compareServiceKeys(a.key(), b.key()) })
	return out
}

func compareServiceKeys(a, b serviceKey) int {
	return cmp.Or(cmp.Compare(a.FWMark, b.FWMark), compareAddrPorts(a.AddrPort, b.AddrPort), cmp.Compare(a.Protocol, b.Protocol))
}

func compareAddrPorts(a, b netip.AddrPort) int { return a.Compare(b) }

func sortedReals(rss []RealServer) []RealServer {
	return slices.SortedFunc(slices.Values(rss), func(a, b RealServer) int { return compareAddrPorts(a.addrPort(), b.addrPort()) })
}

func sortedAddrs(as []netip.Addr) []netip.Addr {
	return slices.SortedFunc(slices.Values(as), netip.Addr.Compare)
}
