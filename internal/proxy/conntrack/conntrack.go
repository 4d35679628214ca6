// Package conntrack deletes the UDP conntrack entries that a sync has made
// stale.
//
// UDP has no end of connection: as long as a client keeps sending, its
// conntrack entry lives on, and with it the DNAT chosen for the first
// packet. When that endpoint goes away the flow is blackholed until the
// client falls silent. Likewise, packets sent to a UDP Service while it had
// no rules or no endpoints leave entries without DNAT, which keep bypassing
// the Service's rules once it has endpoints. One rule covers both: after a
// sync, delete every UDP entry whose original destination is a Service
// address of a UDP port of the plan and whose reply source (the endpoint that
// answers, or the Service address itself when there was no DNAT) is not a
// serving endpoint of that port. TCP and SCTP are left alone, as kube-proxy
// does: their connections end, and clients reconnect.
//
// The package owns no kernel object. It only dumps and deletes conntrack
// entries of one network namespace through netlink; the decision is the pure
// Filter.
package conntrack

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Cleaner deletes stale UDP conntrack entries in one network namespace.
// Not safe for concurrent use.
type Cleaner struct {
	h *netlink.Handle
}

// New returns a cleaner working through h, or in the network namespace of
// the calling thread when h is nil. The cleaner does not own h: the caller
// closes it. New starts nothing.
func New(h *netlink.Handle) *Cleaner {
	if h == nil {
		// The zero Handle opens a socket per request in the current
		// namespace, as netlink's package-level functions do; a nil one
		// would panic.
		h = &netlink.Handle{}
	}
	return &Cleaner{h: h}
}

// CleanUDP deletes the UDP entries of family f that Filter finds stale for
// p, and returns how many it deleted.
//
// Call it only after the dataplane has applied p: an entry deleted while the
// old rules are still in place is recreated by the next packet with the same
// stale DNAT (or lack of it).
//
// When p has UDP NodePorts and no nodePortAddresses, every local address
// accepts them, so the cleaner lists the namespace's addresses first. If
// that fails it still cleans, with p.Config.NodeIPs as the node's addresses,
// and reports the error. A dump interrupted by concurrent table changes is
// reported too (netlink.ErrDumpInterrupted); the entries seen are still
// cleaned, and the next call catches up.
func (c *Cleaner) CleanUDP(p *plan.Plan, f plan.Family, removed ...*plan.ServicePort) (deleted uint, err error) {
	if !hasUDP(p, f, func(sp *plan.ServicePort) bool { return true }) && !anyUDP(removed, f) {
		return 0, nil
	}
	var errs []error
	var local []netip.Addr
	if p.NodePorts(f).AnyLocal && hasUDP(p, f, func(sp *plan.ServicePort) bool { return sp.NodePort != 0 }) {
		if local, err = c.localIPs(f); err != nil {
			errs = append(errs, fmt.Errorf("listing %s node addresses for NodePorts: %w", f, err))
		}
	}
	deleted, err = c.h.ConntrackDeleteFilters(netlink.ConntrackTable, inetFamily(f), NewFilter(p, f, local, removed...))
	if err != nil {
		errs = append(errs, fmt.Errorf("deleting stale %s UDP conntrack entries: %w", f, err))
	}
	return deleted, errors.Join(errs...)
}

// localIPs lists the addresses of family f configured in the namespace.
func (c *Cleaner) localIPs(f plan.Family) ([]netip.Addr, error) {
	addrs, err := c.h.AddrList(nil, int(inetFamily(f)))
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, err
}

// NeedsClean reports whether CleanUDP could find anything to delete in
// family f after a sync that rendered ch: after a full sync when the plan has
// UDP ports of f, else when a changed UDP port of f is still in the plan,
// and whenever a UDP port of f was removed (pass ch.Removed to CleanUDP).
// Callers use it to skip the walk over the whole conntrack table.
func NeedsClean(p *plan.Plan, ch plan.Changes, f plan.Family) bool {
	if anyUDP(slices.Collect(maps.Values(ch.Removed)), f) {
		return true
	}
	if ch.Full {
		return hasUDP(p, f, func(sp *plan.ServicePort) bool { return true })
	}
	for k := range ch.Keys {
		if k.Family == f && k.Protocol == v1.ProtocolUDP && p.Ports[k] != nil {
			return true
		}
	}
	return false
}

// anyUDP reports whether ports has a UDP port of family f.
func anyUDP(ports []*plan.ServicePort, f plan.Family) bool {
	return slices.ContainsFunc(ports, func(sp *plan.ServicePort) bool {
		return sp != nil && sp.Family == f && sp.Protocol == v1.ProtocolUDP
	})
}

// hasUDP reports whether p has a UDP port of family f for which ok is true.
func hasUDP(p *plan.Plan, f plan.Family, ok func(*plan.ServicePort) bool) bool {
	if p == nil {
		return false
	}
	for k, sp := range p.Ports {
		if k.Family == f && k.Protocol == v1.ProtocolUDP && ok(sp) {
			return true
		}
	}
	return false
}

func inetFamily(f plan.Family) netlink.InetFamily {
	if f == plan.IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}
