package ipvs

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// OpKind is the kind of one change to the kernel.
type OpKind int

// The changes Apply makes.
const (
	CreateInterface OpKind = iota
	AddAddress
	DeleteAddress
	AddService
	UpdateService
	DeleteService
	AddReal
	UpdateReal
	// DrainReal sets a removed real server's weight to 0.
	DrainReal
	DeleteReal
	CreateSet
	DestroySet
	AddEntry
	// ReplaceEntry changes an entry's comment.
	ReplaceEntry
	DeleteEntry
	// AddLocalRouting adds a family's LocalMark rule and route,
	// DeleteLocalRouting deletes them.
	AddLocalRouting
	DeleteLocalRouting
)

var opNames = map[OpKind]string{
	CreateInterface: "create interface", AddAddress: "add address", DeleteAddress: "delete address",
	AddService: "add service", UpdateService: "update service", DeleteService: "delete service",
	AddReal: "add real", UpdateReal: "update real", DrainReal: "drain real", DeleteReal: "delete real",
	CreateSet: "create set", DestroySet: "destroy set",
	AddEntry: "add entry", ReplaceEntry: "replace entry", DeleteEntry: "delete entry",
	AddLocalRouting: "add local routing", DeleteLocalRouting: "delete local routing",
}

func (k OpKind) String() string { return opNames[k] }

// Op is one change: its Kind says which of the other fields it uses.
type Op struct {
	Kind OpKind
	// Address is the address of AddAddress and DeleteAddress.
	Address netip.Addr
	// Service is the virtual server changed, or whose real server is
	// (its Reals are not used).
	Service *VirtualServer
	// Real is the real server changed, with its new weight.
	Real RealServer
	// Set is the set changed, or whose entry is (its Entries are not used).
	Set *Set
	// Entry is the entry changed.
	Entry Entry
	// Family and Mark are those of AddLocalRouting and DeleteLocalRouting.
	Family Family
	Mark   uint32
}

// String describes the change in one line, e.g.
// "add real TCP 10.96.0.10:80 -> 10.244.1.2:8080 weight 1".
func (op Op) String() string {
	var what string
	switch op.Kind {
	case AddAddress, DeleteAddress:
		what = op.Address.String()
	case AddService, UpdateService:
		what = serviceLine(op.Service)
	case DeleteService:
		what = op.Service.key().String()
	case AddReal, UpdateReal, DrainReal, DeleteReal:
		what = fmt.Sprintf("%s -> %s weight %d", op.Service.key(), op.Real.addrPort(), op.Real.Weight)
	case CreateSet, DestroySet:
		what = setLine(op.Set)
	case AddEntry, ReplaceEntry, DeleteEntry:
		what = op.Set.Name + " " + entryLine(op.Set.Type, op.Entry)
	case AddLocalRouting, DeleteLocalRouting:
		what = fmt.Sprintf("%s mark %#x", op.Family, op.Mark)
	}
	return strings.TrimSpace(op.Kind.String() + " " + what)
}

// serviceLine is a virtual server's settings, as Dump prints them.
func serviceLine(vs *VirtualServer) string {
	s := fmt.Sprintf("%s %s", vs.key(), vs.Scheduler)
	if f := vs.Flags.String(); f != "" {
		s += " flags " + f
	}
	if secs := vs.persistenceSeconds(); secs != 0 {
		s += fmt.Sprintf(" persistent %d mask /%d", secs, vs.mask())
	}
	return s
}

func setLine(set *Set) string {
	s := set.Name + " " + string(set.Type)
	if set.Family != "" {
		s += " family " + string(set.Family)
	}
	return s
}

func entryLine(t SetType, e Entry) string {
	s := e.String(t)
	if e.Comment != "" {
		s += fmt.Sprintf(" comment %q", e.Comment)
	}
	return s
}

// dump prints the state as sorted text, one object a line: the dummy
// interface's addresses, each virtual server with its real servers, each
// set of ours with its entries. Connection counts are left out.
func (o *observed) dump(opts Options) string {
	var b strings.Builder
	if o.interfaceExists {
		fmt.Fprintf(&b, "interface %s\n", opts.Interface)
		for _, a := range sortedAddrs(o.addresses) {
			fmt.Fprintf(&b, "  address %s\n", a)
		}
	}
	for _, key := range slices.SortedFunc(maps.Keys(o.services), compareServiceKeys) {
		svc := o.services[key]
		fmt.Fprintf(&b, "service %s\n", serviceLine(&svc.vs))
		for _, ap := range slices.SortedFunc(maps.Keys(svc.reals), compareAddrPorts) {
			fmt.Fprintf(&b, "  -> %s weight %d\n", ap, svc.reals[ap].Weight)
		}
	}
	for _, f := range []Family{IPv4, IPv6} {
		if m := o.localMarks[f]; m != 0 {
			fmt.Fprintf(&b, "local routing %s mark %#x table %d priority %d\n", f, m, opts.LocalTable, opts.LocalRulePriority)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(o.sets)) {
		set := o.sets[name]
		if !strings.HasPrefix(name, opts.SetPrefix) {
			continue
		}
		fmt.Fprintf(&b, "set %s\n", setLine(&set.set))
		for _, key := range slices.Sorted(maps.Keys(set.entries)) {
			fmt.Fprintf(&b, "  %s\n", entryLine(set.set.Type, set.entries[key]))
		}
	}
	return b.String()
}

// state is the observed state as a State, sorted: what a tracer reads.
func (o *observed) state(opts Options) State {
	s := State{Addresses: sortedAddrs(o.addresses)}
	for _, key := range slices.SortedFunc(maps.Keys(o.services), compareServiceKeys) {
		svc := o.services[key]
		vs := svc.vs
		vs.Reals = nil
		for _, ap := range slices.SortedFunc(maps.Keys(svc.reals), compareAddrPorts) {
			vs.Reals = append(vs.Reals, svc.reals[ap].RealServer)
		}
		s.Services = append(s.Services, vs)
	}
	for _, name := range slices.Sorted(maps.Keys(o.sets)) {
		if !strings.HasPrefix(name, opts.SetPrefix) {
			continue
		}
		set := o.sets[name].set
		set.Entries = nil
		for _, key := range slices.Sorted(maps.Keys(o.sets[name].entries)) {
			set.Entries = append(set.Entries, o.sets[name].entries[key])
		}
		s.Sets = append(s.Sets, set)
	}
	for _, f := range []Family{IPv4, IPv6} {
		if m := o.localMarks[f]; m != 0 {
			s.LocalMark = m
			s.LocalFamilies = append(s.LocalFamilies, f)
		}
	}
	return s
}
