package plan

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
)

// The node-port address set: which of this node's addresses accept
// NodePorts, and where a health-check node port listens. Every dataplane,
// the conntrack cleaner, the health servers and the host setup read it
// from here (Plan.NodePorts).

// ipv4Loopback is the loopback address NodePorts answer on with
// LocalhostNodePorts: the one every node's lo has.
var ipv4Loopback = netip.MustParseAddr("127.0.0.1")

// NodePortAddrs is where this node accepts NodePorts in one family, and
// where its health-check node ports listen.
type NodePortAddrs struct {
	// AnyLocal: every local address of the node accepts NodePorts, but
	// loopback ones only with Loopback. IPs is then empty.
	AnyLocal bool
	// IPs are the addresses that accept them otherwise (127.0.0.1 among
	// them with Loopback).
	IPs []netip.Addr
	// Loopback: loopback addresses accept NodePorts (IPv4 localhost
	// NodePorts). The node then needs route_localnet=1, and kube-proxy's
	// rule that keeps other hosts from using it (CVE-2020-8558).
	Loopback bool
	// HealthAnyLocal: a health-check node port listens on the family's
	// wildcard address; else on HealthIPs (every node address in
	// nodePortAddresses, loopback included when a prefix holds it, as
	// kube-proxy's server listens).
	HealthAnyLocal bool
	HealthIPs      []netip.Addr
}

// NodePorts resolves the node-port address set of family f.
func (p *Plan) NodePorts(f Family) NodePortAddrs { return p.Config.NodePorts(f) }

// NodePorts resolves the node-port address set of family f: kube-proxy's
// nodePortAddresses family by family (a family with no prefix, or with a
// /0, is not restricted), and localhost NodePorts, IPv4 only, where
// nodePortAddresses lets every address or 127.0.0.1 accept them
// (kube-proxy disables them otherwise).
func (c *Config) NodePorts(f Family) NodePortAddrs {
	prefixes, all := c.nodePortPrefixes(f)
	n := NodePortAddrs{AnyLocal: all, HealthAnyLocal: all}
	n.Loopback = f == IPv4 && c.LocalhostNodePorts && (all || containsAddr(prefixes, ipv4Loopback))
	if all {
		return n
	}
	for _, ip := range c.NodeIPs {
		if FamilyOf(ip) == f && !ip.IsLoopback() && containsAddr(prefixes, ip) {
			n.IPs = append(n.IPs, ip)
		}
	}
	if n.Loopback {
		n.IPs = append(n.IPs, ipv4Loopback)
	}
	loopback := netip.IPv6Loopback()
	if f == IPv4 {
		loopback = ipv4Loopback
	}
	for _, ip := range append(slices.Clone(c.NodeIPs), loopback) {
		if FamilyOf(ip) == f && containsAddr(prefixes, ip) && !slices.Contains(n.HealthIPs, ip) {
			n.HealthIPs = append(n.HealthIPs, ip)
		}
	}
	return n
}

// Accepts reports whether the node address a accepts NodePorts; isLocal
// says which addresses are the node's, for AnyLocal.
func (n NodePortAddrs) Accepts(a netip.Addr, isLocal func(netip.Addr) bool) bool {
	switch {
	case !n.AnyLocal:
		return slices.Contains(n.IPs, a)
	case a.IsLoopback():
		return n.Loopback
	}
	return isLocal(a)
}

// nodePortPrefixes returns NodePortAddresses's prefixes of family f, or
// all when the family is not restricted.
func (c *Config) nodePortPrefixes(f Family) (prefixes []netip.Prefix, all bool) {
	for _, p := range c.NodePortAddresses {
		if FamilyOf(p.Addr()) != f {
			continue
		}
		if p.Bits() == 0 {
			return nil, true
		}
		prefixes = append(prefixes, p)
	}
	return prefixes, len(prefixes) == 0
}

// PrimaryNodeIPs are a Node's primary addresses as kube-proxy picks them
// for nodePortAddresses "primary": its first InternalIP (else ExternalIP)
// and the first of the other family; override (bindAddress, when set)
// replaces the one of its family.
func PrimaryNodeIPs(node *v1.Node, override netip.Addr) []netip.Addr {
	var all []netip.Addr
	for _, kind := range []v1.NodeAddressType{v1.NodeInternalIP, v1.NodeExternalIP} {
		for _, a := range node.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == kind {
				all = append(all, ip.Unmap())
			}
		}
	}
	var out []netip.Addr
	for _, ip := range all {
		if !slices.ContainsFunc(out, func(o netip.Addr) bool { return FamilyOf(o) == FamilyOf(ip) }) {
			out = append(out, ip)
		}
	}
	if !override.IsValid() {
		return out
	}
	for i, ip := range out {
		if FamilyOf(ip) == FamilyOf(override) {
			out[i] = override
			return out
		}
	}
	return append(out, override)
}
