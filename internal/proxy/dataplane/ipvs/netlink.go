package ipvs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink is the kernel of one network namespace, over netlink: IPVS
// through github.com/moby/ipvs (generic netlink "IPVS"), the dummy
// interface, its addresses and the ipsets through
// github.com/vishvananda/netlink. It owns every virtual server outside
// Options.ExcludeCIDRs, every address on Options.Interface and every set
// named with Options.SetPrefix.
type Netlink struct {
	applier
	mu        sync.Mutex
	ipvs      *libipvs.Handle
	nl        *netlink.Handle
	ipsetSock *nl.NetlinkSocket // for bitmapPortEntry
}

// NewNetlink returns the kernel of opts.NetNS; it opens nothing until
// the first call.
func NewNetlink(opts Options) *Netlink { return &Netlink{applier: newApplier(opts)} }

// Apply makes the kernel hold s with as few changes as it can, and says
// what it did. Real servers the state drops drain first (see retire); call
// Apply again after Result.RecheckAfter to delete them. A state that does
// not validate changes nothing.
func (k *Netlink) Apply(ctx context.Context, s State) (Result, error) {
	return k.apply(ctx, k, s)
}

// ApplyChanges makes the kernel go from prev, the last State applied
// (with no real server draining since), to next, reading only the real
// servers of the services that lose some: a partial sync's cost follows
// the change, not the node's size. Apply is the one to call while real
// servers drain, or after anything else may have changed the kernel.
func (k *Netlink) ApplyChanges(ctx context.Context, prev, next State) (Result, error) {
	return k.applyChanges(ctx, k, prev, next)
}

// Dump prints the kernel's state as Fake.Dump prints the fake's.
func (k *Netlink) Dump(ctx context.Context) (string, error) {
	o, err := k.read(ctx)
	if err != nil {
		return "", err
	}
	return o.dump(k.opts), nil
}

// Cleanup removes everything this layer owns: its virtual servers, the
// dummy interface with its addresses, its sets.
func (k *Netlink) Cleanup(ctx context.Context) error {
	o, err := k.read(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for key, svc := range o.services {
		if !k.excludedAddr(key.AddrPort.Addr()) {
			errs = append(errs, k.do(ctx, Op{Kind: DeleteService, Service: &svc.vs}))
		}
	}
	if link, err := k.nl.LinkByName(k.opts.Interface); err == nil {
		errs = append(errs, k.nl.LinkDel(link))
	}
	for f, mark := range o.localMarks {
		errs = append(errs, k.do(ctx, Op{Kind: DeleteLocalRouting, Family: f, Mark: mark}))
	}
	for name, set := range o.sets {
		if strings.HasPrefix(name, k.opts.SetPrefix) {
			errs = append(errs, k.do(ctx, Op{Kind: DestroySet, Set: &set.set}))
		}
	}
	return errors.Join(errs...)
}

func (k *Netlink) excludedAddr(a netip.Addr) bool {
	p := planner{opts: k.opts}
	return p.excluded(a)
}

// Close releases the netlink sockets.
func (k *Netlink) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ipvs != nil {
		k.ipvs.Close()
		k.ipvs = nil
	}
	if k.nl != nil {
		k.nl.Close()
		k.ipsetSock.Close()
		k.nl, k.ipsetSock = nil, nil
	}
}

// open opens the sockets in the namespace once.
func (k *Netlink) open() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ipvs != nil {
		return nil
	}
	ns := netns.None()
	if k.opts.NetNS != "" {
		var err error
		if ns, err = netns.GetFromPath(k.opts.NetNS); err != nil {
			return fmt.Errorf("netns %s: %w", k.opts.NetNS, err)
		}
		defer ns.Close()
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		h.Close()
		return fmt.Errorf("netfilter netlink: %w", err)
	}
	// moby/ipvs finds the IPVS generic netlink family once per process;
	// it fails, and says so only in a log line, if ip_vs is not loaded.
	iv, err := libipvs.New(k.opts.NetNS)
	if err != nil {
		h.Close()
		sock.Close()
		return fmt.Errorf("ipvs netlink: %w", err)
	}
	k.ipvs, k.nl, k.ipsetSock = iv, h, sock
	return nil
}

// read reads everything this layer owns, and the connection counts.
func (k *Netlink) read(context.Context) (*observed, error) {
	if err := k.open(); err != nil {
		return nil, err
	}
	o := newObserved()
	if err := k.readAddresses(o); err != nil {
		return nil, err
	}
	if err := k.readServices(o); err != nil {
		return nil, err
	}
	if err := k.readLocalRouting(o); err != nil {
		return nil, err
	}
	return o, k.readSets(o)
}

// readLocalRouting finds, per family, the LocalMark rule into
// Options.LocalTable and that table's local default route: a family has
// its local routing when it has both.
func (k *Netlink) readLocalRouting(o *observed) error {
	for _, f := range []Family{IPv4, IPv6} {
		rules, err := k.nl.RuleListFiltered(nlFamily(f), &netlink.Rule{Table: k.opts.LocalTable}, netlink.RT_FILTER_TABLE)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			continue // a kernel without IPv6 has no rule of it
		}
		if err != nil {
			return fmt.Errorf("policy rules: %w", err)
		}
		routes, err := k.nl.RouteListFiltered(nlFamily(f), &netlink.Route{Table: k.opts.LocalTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("routes of table %d: %w", k.opts.LocalTable, err)
		}
		if len(rules) > 0 && len(routes) > 0 {
			o.localMarks[f] = rules[0].Mark
		}
	}
	return nil
}

func nlFamily(f Family) int {
	if f == IPv6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// doLocalRouting adds or deletes a family's LocalMark rule and route. An
// add replaces a route left alone, a delete ignores one already gone.
func (k *Netlink) doLocalRouting(op Op) error {
	lo, err := k.nl.LinkByName("lo")
	if err != nil {
		return err
	}
	mask := op.Mark
	rule := netlink.NewRule()
	rule.Family, rule.Table, rule.Priority, rule.Mark, rule.Mask = nlFamily(op.Family), k.opts.LocalTable, k.opts.LocalRulePriority, op.Mark, &mask
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if op.Family == IPv6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	route := &netlink.Route{Family: nlFamily(op.Family), Dst: dst, LinkIndex: lo.Attrs().Index, Table: k.opts.LocalTable,
		Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST}
	if op.Kind == AddLocalRouting {
		// A rule left without its route reads as no local routing: go
		// it, so that the add does not find it there.
		if err := k.nl.RuleDel(rule); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("policy rule: %w", err)
		}
		if err := k.nl.RouteReplace(route); err != nil {
			return fmt.Errorf("route local default dev lo table %d: %w", k.opts.LocalTable, err)
		}
		return k.nl.RuleAdd(rule)
	}
	err = k.nl.RuleDel(rule)
	if rerr := k.nl.RouteDel(route); rerr != nil && !errors.Is(rerr, unix.ESRCH) {
		err = errors.Join(err, rerr)
	}
	return err
}

func (k *Netlink) readAddresses(o *observed) error {
	link, err := k.nl.LinkByName(k.opts.Interface)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("interface %s: %w", k.opts.Interface, err)
	}
	o.interfaceExists = true
	addrs, err := k.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", k.opts.Interface, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			o.addresses = append(o.addresses, ip.Unmap())
		}
	}
	return nil
}

func (k *Netlink) readServices(o *observed) error {
	svcs, err := k.ipvs.GetServices()
	if err != nil {
		return fmt.Errorf("ipvs services: %w", err)
	}
	for _, s := range svcs {
		vs, err := fromService(s)
		if err != nil {
			return err
		}
		reals, err := k.readReals(context.Background(), &vs)
		if err != nil {
			return fmt.Errorf("real servers of %s: %w", vs.key(), err)
		}
		o.services[vs.key()] = &observedService{vs: vs, reals: reals}
	}
	return nil
}

func (k *Netlink) readReals(_ context.Context, vs *VirtualServer) (map[netip.AddrPort]*observedReal, error) {
	if err := k.open(); err != nil {
		return nil, err
	}
	dsts, err := k.ipvs.GetDestinations(toService(vs))
	if err != nil {
		return nil, err
	}
	reals := map[netip.AddrPort]*observedReal{}
	for _, d := range dsts {
		addr, _ := netip.AddrFromSlice(d.Address)
		rs := RealServer{Address: addr.Unmap(), Port: d.Port, Weight: d.Weight}
		reals[rs.addrPort()] = &observedReal{RealServer: rs, active: d.ActiveConnections, inactive: d.InactiveConnections}
	}
	return reals, nil
}

func (k *Netlink) readSets(o *observed) error {
	sets, err := k.nl.IpsetListAll()
	if err != nil {
		return fmt.Errorf("ipsets: %w", err)
	}
	// A large set comes in several messages, each a result of its own.
	for _, r := range sets {
		set := o.sets[r.SetName]
		if set == nil {
			set = &observedSet{set: Set{Name: r.SetName, Type: SetType(r.TypeName), Family: familyOf(r)}, entries: map[string]Entry{}}
			o.sets[r.SetName] = set
		}
		for _, e := range r.Entries {
			entry := fromIpsetEntry(set.set.Type, e)
			set.entries[entry.String(set.set.Type)] = entry
		}
	}
	return nil
}

// do makes one change.
func (k *Netlink) do(_ context.Context, op Op) error {
	switch op.Kind {
	case CreateInterface:
		return k.nl.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: k.opts.Interface}})
	case AddAddress, DeleteAddress:
		return k.doAddress(op)
	case AddService:
		return k.ipvs.NewService(toService(op.Service))
	case UpdateService:
		return k.ipvs.UpdateService(toService(op.Service))
	case DeleteService:
		return k.ipvs.DelService(toService(op.Service))
	case AddReal:
		return k.ipvs.NewDestination(toService(op.Service), toDestination(op.Real))
	case UpdateReal, DrainReal:
		return k.ipvs.UpdateDestination(toService(op.Service), toDestination(op.Real))
	case DeleteReal:
		return k.ipvs.DelDestination(toService(op.Service), toDestination(op.Real))
	case CreateSet:
		return k.nl.IpsetCreate(op.Set.Name, string(op.Set.Type), createOptions(op.Set))
	case DestroySet:
		return k.nl.IpsetDestroy(op.Set.Name)
	case AddEntry, ReplaceEntry, DeleteEntry:
		return k.doEntry(op)
	case AddLocalRouting, DeleteLocalRouting:
		return k.doLocalRouting(op)
	}
	return fmt.Errorf("unknown change %d", op.Kind)
}

func (k *Netlink) doEntry(op Op) error {
	if op.Set.Type == BitmapPort {
		cmd := nl.IPSET_CMD_ADD
		if op.Kind == DeleteEntry {
			cmd = nl.IPSET_CMD_DEL
		}
		return k.bitmapPortEntry(cmd, op.Set.Name, op.Entry, op.Kind == ReplaceEntry)
	}
	switch op.Kind {
	case AddEntry:
		return k.nl.IpsetAdd(op.Set.Name, toIpsetEntry(op.Set.Type, op.Entry, false))
	case ReplaceEntry:
		return k.nl.IpsetAdd(op.Set.Name, toIpsetEntry(op.Set.Type, op.Entry, true))
	default:
		return k.nl.IpsetDel(op.Set.Name, toIpsetEntry(op.Set.Type, op.Entry, false))
	}
}

// doAddress binds or unbinds a Service address. The interface stays
// down, as kube-proxy's: the kernel still adds the address's local
// route, which is all the node needs to accept packets to it.
func (k *Netlink) doAddress(op Op) error {
	link, err := k.nl.LinkByName(k.opts.Interface)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: op.Address.AsSlice(), Mask: net.CIDRMask(op.Address.BitLen(), op.Address.BitLen())}}
	if op.Kind == AddAddress {
		return k.nl.AddrAdd(link, addr)
	}
	return k.nl.AddrDel(link, addr)
}

func toService(vs *VirtualServer) *libipvs.Service {
	s := &libipvs.Service{
		Address:   vs.Address.AsSlice(),
		Protocol:  uint16(vs.Protocol),
		Port:      vs.Port,
		FWMark:    vs.FWMark,
		SchedName: vs.Scheduler,
		Flags:     uint32(vs.Flags),
	}
	s.AddressFamily, s.Netmask = unix.AF_INET6, uint32(vs.mask())
	if vs.Address.Is4() {
		s.AddressFamily, s.Netmask = unix.AF_INET, toNetmask4(vs.mask())
	}
	if secs := vs.persistenceSeconds(); secs > 0 {
		s.Flags |= flagPersistent
		s.Timeout = secs
	}
	return s
}

func fromService(s *libipvs.Service) (VirtualServer, error) {
	addr, ok := netip.AddrFromSlice(s.Address)
	switch {
	case s.FWMark != 0 && s.AddressFamily == unix.AF_INET6:
		addr, ok = netip.IPv6Unspecified(), true
	case s.FWMark != 0:
		addr, ok = netip.IPv4Unspecified(), true
	}
	if !ok {
		return VirtualServer{}, fmt.Errorf("ipvs service with address %v", s.Address)
	}
	vs := VirtualServer{
		Address:   addr.Unmap(),
		Protocol:  Protocol(s.Protocol),
		Port:      s.Port,
		FWMark:    s.FWMark,
		Scheduler: s.SchedName,
		Flags:     Flags(s.Flags &^ (flagPersistent | flagHashed)),
	}
	if s.Flags&flagPersistent != 0 {
		vs.PersistenceTimeout = secondsToDuration(s.Timeout)
		vs.PersistenceMask = int(s.Netmask)
		if vs.Address.Is4() {
			vs.PersistenceMask = fromNetmask4(s.Netmask)
		}
	}
	return vs, nil
}

// The kernel takes an IPv4 service's netmask as a big-endian mask (an
// IPv6 one as a prefix length), but moby/ipvs writes and reads the
// attribute in host byte order: these turn a prefix length into the value
// moby/ipvs must be given, and back.
func toNetmask4(bits int) uint32 {
	be := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-bits))
	return binary.NativeEndian.Uint32(be)
}

func fromNetmask4(v uint32) int {
	return bits.OnesCount32(binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, v)))
}

func toDestination(rs RealServer) *libipvs.Destination {
	d := &libipvs.Destination{
		Address:         rs.Address.AsSlice(),
		Port:            rs.Port,
		Weight:          rs.Weight,
		ConnectionFlags: libipvs.ConnectionFlagMasq,
		AddressFamily:   unix.AF_INET6,
	}
	if rs.Address.Is4() {
		d.AddressFamily = unix.AF_INET
	}
	return d
}

func familyOf(r netlink.IPSetResult) Family {
	switch {
	case r.TypeName == string(BitmapPort):
		return ""
	case r.Family == unix.AF_INET6:
		return IPv6
	}
	return IPv4
}

// setRevisions are, per type, the first revision with the comment
// extension; vishvananda/netlink knows none for hash:net and bitmap:port,
// whose revision 0 has no comments.
var setRevisions = map[SetType]uint8{
	HashIP: 2, HashIPPort: 3, HashIPPortIP: 3, HashIPPortNet: 5, HashNet: 4, BitmapPort: 2,
}

func createOptions(set *Set) netlink.IpsetCreateOptions {
	o := netlink.IpsetCreateOptions{Comments: true, Revision: setRevisions[set.Type]}
	switch {
	case set.Type == BitmapPort:
		o.PortFrom, o.PortTo = 0, 65535
	case set.Family == IPv6:
		o.Family, o.MaxElements = unix.AF_INET6, 65536
	default:
		o.Family, o.MaxElements = unix.AF_INET, 65536
	}
	return o
}

// toIpsetEntry spells e for vishvananda/netlink: a network is an address
// and a CIDR attribute, and replace re-adds an entry to change its
// comment.
func toIpsetEntry(t SetType, e Entry, replace bool) *netlink.IPSetEntry {
	out := &netlink.IPSetEntry{Comment: e.Comment, Replace: replace}
	proto, port := uint8(e.Protocol), e.Port
	switch t {
	case HashIP:
		out.IP = e.IP.AsSlice()
	case HashIPPort, HashIPPortIP, HashIPPortNet:
		out.IP, out.Protocol, out.Port = e.IP.AsSlice(), &proto, &port
		if t == HashIPPortIP {
			out.IP2 = e.IP2.AsSlice()
		}
		if t == HashIPPortNet {
			out.IP2, out.CIDR2 = e.Net.Addr().AsSlice(), uint8(e.Net.Bits())
		}
	case HashNet:
		out.IP, out.CIDR = e.Net.Addr().AsSlice(), uint8(e.Net.Bits())
	}
	return out
}

func fromIpsetEntry(t SetType, e netlink.IPSetEntry) Entry {
	addr := func(ip net.IP) netip.Addr {
		a, _ := netip.AddrFromSlice(ip)
		return a.Unmap()
	}
	out := Entry{Comment: e.Comment}
	if e.Protocol != nil {
		out.Protocol = Protocol(*e.Protocol)
	}
	if e.Port != nil {
		out.Port = *e.Port
	}
	switch t {
	case HashIP, HashIPPort:
		out.IP = addr(e.IP)
	case HashIPPortIP:
		out.IP, out.IP2 = addr(e.IP), addr(e.IP2)
	case HashIPPortNet:
		out.IP, out.Net = addr(e.IP), netip.PrefixFrom(addr(e.IP2), int(e.CIDR2))
	case HashNet:
		out.Net = netip.PrefixFrom(addr(e.IP), int(e.CIDR))
	}
	return out
}

func secondsToDuration(s uint32) time.Duration { return time.Duration(s) * time.Second }

// SetTimeouts sets IPVS's connection timeouts (ipvsadm --set); a zero one
// is left as it is.
func (k *Netlink) SetTimeouts(t Timeouts) error {
	if err := k.open(); err != nil {
		return err
	}
	cur, err := k.ipvs.GetConfig()
	if err != nil {
		return fmt.Errorf("ipvs timeouts: %w", err)
	}
	next := *cur
	for _, s := range []struct {
		want time.Duration
		to   *time.Duration
	}{{t.TCP, &next.TimeoutTCP}, {t.TCPFin, &next.TimeoutTCPFin}, {t.UDP, &next.TimeoutUDP}} {
		if s.want > 0 {
			*s.to = s.want
		}
	}
	if next == *cur {
		return nil
	}
	if err := k.ipvs.SetConfig(&next); err != nil {
		return fmt.Errorf("ipvs timeouts: %w", err)
	}
	return nil
}

// Read returns what the kernel holds of this layer's, as a State (for
// tracing it, e.g. `svcproxy trace` on an IPVS node).
func (k *Netlink) Read(ctx context.Context) (State, error) {
	o, err := k.read(ctx)
	if err != nil {
		return State{}, err
	}
	return o.state(k.opts), nil
}
