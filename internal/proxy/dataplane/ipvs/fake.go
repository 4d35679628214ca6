package ipvs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"syscall"
)

// Fake is an in-memory kernel that Apply programs as strictly as the real
// one: adding what exists, or changing or deleting what does not, fails
// with the kernel's error (EEXIST, ENOENT, ESRCH). Dump prints it as
// Netlink.Dump prints the kernel; LastOps are the changes of the last
// Apply. SetConnections plays the clients whose connections keep a
// removed real server draining.
type Fake struct {
	applier
	mu      sync.Mutex
	state   *observed
	lastOps []Op
	reads   int
}

// NewFake returns an empty fake kernel: no interface, service or set.
func NewFake(opts Options) *Fake {
	return &Fake{applier: newApplier(opts), state: newObserved()}
}

// Apply makes the fake hold s; see Netlink.Apply.
func (f *Fake) Apply(ctx context.Context, s State) (Result, error) {
	res, err := f.apply(ctx, f, s)
	f.mu.Lock()
	f.lastOps = res.Ops
	f.mu.Unlock()
	return res, err
}

// ApplyChanges makes the fake go from prev to next; see
// Netlink.ApplyChanges.
func (f *Fake) ApplyChanges(ctx context.Context, prev, next State) (Result, error) {
	res, err := f.applyChanges(ctx, f, prev, next)
	f.mu.Lock()
	f.lastOps = res.Ops
	f.mu.Unlock()
	return res, err
}

// Dump prints the fake's state as sorted text.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.dump(f.opts)
}

// LastOps are the changes the last Apply made.
func (f *Fake) LastOps() []Op {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lastOps)
}

// SetConnections sets the active and inactive connection counts of a
// real server, as clients would.
func (f *Fake) SetConnections(proto Protocol, service, real netip.AddrPort, active, inactive int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	svc := f.state.services[serviceKey{Protocol: proto, AddrPort: service}]
	if svc == nil || svc.reals[real] == nil {
		return fmt.Errorf("fake: no real server %s in %s %s: %w", real, proto, service, syscall.ENOENT)
	}
	svc.reals[real].active, svc.reals[real].inactive = active, inactive
	return nil
}

// Reads counts the times an Apply read the whole fake.
func (f *Fake) Reads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// read returns a deep copy, so that a plan never sees its own changes.
func (f *Fake) read(context.Context) (*observed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	o := *f.state
	o.addresses = slices.Clone(o.addresses)
	o.services = map[serviceKey]*observedService{}
	for k, svc := range f.state.services {
		c := &observedService{vs: svc.vs, reals: map[netip.AddrPort]*observedReal{}}
		for ap, r := range svc.reals {
			rc := *r
			c.reals[ap] = &rc
		}
		o.services[k] = c
	}
	o.localMarks = maps.Clone(f.state.localMarks)
	o.sets = map[string]*observedSet{}
	for name, set := range f.state.sets {
		o.sets[name] = &observedSet{set: set.set, entries: maps.Clone(set.entries)}
	}
	return &o, nil
}

func (f *Fake) readReals(_ context.Context, vs *VirtualServer) (map[netip.AddrPort]*observedReal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	svc := f.state.services[vs.key()]
	if svc == nil {
		return nil, syscall.ESRCH
	}
	reals := map[netip.AddrPort]*observedReal{}
	for ap, r := range svc.reals {
		rc := *r
		reals[ap] = &rc
	}
	return reals, nil
}

// do makes one change, or fails as the kernel would and changes nothing.
func (f *Fake) do(_ context.Context, op Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch op.Kind {
	case CreateInterface, AddAddress, DeleteAddress:
		return f.doAddress(op)
	case AddService, UpdateService, DeleteService:
		return f.doService(op)
	case AddReal, UpdateReal, DrainReal, DeleteReal:
		return f.doReal(op)
	case AddLocalRouting, DeleteLocalRouting:
		cur, exists := f.state.localMarks[op.Family]
		switch {
		case op.Kind == AddLocalRouting && exists:
			return syscall.EEXIST
		case op.Kind == AddLocalRouting:
			f.state.localMarks[op.Family] = op.Mark
		case !exists || cur != op.Mark:
			return syscall.ENOENT
		default:
			delete(f.state.localMarks, op.Family)
		}
		return nil
	}
	return f.doSet(op)
}

func (f *Fake) doAddress(op Op) error {
	s := f.state
	if op.Kind == CreateInterface {
		if s.interfaceExists {
			return syscall.EEXIST
		}
		s.interfaceExists = true
		return nil
	}
	if !s.interfaceExists {
		return syscall.ENODEV
	}
	i := slices.Index(s.addresses, op.Address)
	switch {
	case op.Kind == AddAddress && i >= 0:
		return syscall.EEXIST
	case op.Kind == AddAddress:
		s.addresses = append(s.addresses, op.Address)
	case i < 0:
		return syscall.EADDRNOTAVAIL
	default:
		s.addresses = slices.Delete(s.addresses, i, i+1)
	}
	return nil
}

func (f *Fake) doService(op Op) error {
	key := op.Service.key()
	cur := f.state.services[key]
	switch {
	case op.Kind == AddService && cur != nil:
		return syscall.EEXIST
	case op.Kind == AddService:
		f.state.services[key] = &observedService{vs: *op.Service, reals: map[netip.AddrPort]*observedReal{}}
	case cur == nil:
		return syscall.ESRCH // as IPVS says of a missing service
	case op.Kind == UpdateService:
		cur.vs = *op.Service
	default:
		delete(f.state.services, key)
	}
	return nil
}

func (f *Fake) doReal(op Op) error {
	svc := f.state.services[op.Service.key()]
	if svc == nil {
		return syscall.ESRCH
	}
	ap := op.Real.addrPort()
	cur := svc.reals[ap]
	switch {
	case op.Kind == AddReal && cur != nil:
		return syscall.EEXIST
	case op.Kind == AddReal:
		svc.reals[ap] = &observedReal{RealServer: op.Real}
	case cur == nil:
		return syscall.ENOENT
	case op.Kind == DeleteReal:
		delete(svc.reals, ap)
	default:
		cur.Weight = op.Real.Weight
	}
	return nil
}

func (f *Fake) doSet(op Op) error {
	set := f.state.sets[op.Set.Name]
	switch op.Kind {
	case CreateSet:
		if set != nil {
			return syscall.EEXIST
		}
		f.state.sets[op.Set.Name] = &observedSet{set: *op.Set, entries: map[string]Entry{}}
		return nil
	case DestroySet:
		if set == nil {
			return syscall.ENOENT
		}
		delete(f.state.sets, op.Set.Name)
		return nil
	}
	if set == nil {
		return syscall.ENOENT
	}
	key := op.Entry.String(set.set.Type)
	_, exists := set.entries[key]
	switch {
	case op.Kind == AddEntry && exists:
		return syscall.EEXIST
	case op.Kind == DeleteEntry && !exists:
		return syscall.ENOENT
	case op.Kind == DeleteEntry:
		delete(set.entries, key)
	case op.Kind == AddEntry || op.Kind == ReplaceEntry:
		set.entries[key] = op.Entry
	default:
		return errors.New("fake: unknown change")
	}
	return nil
}

// Cleanup empties the fake, as Netlink.Cleanup empties the kernel.
func (f *Fake) Cleanup(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = newObserved()
	return nil
}

// State returns what the fake holds, as Netlink.Read returns the kernel's.
func (f *Fake) State() State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.state(f.opts)
}
