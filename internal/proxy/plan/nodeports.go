package plan

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
)

// The node-port address set: which of this node's addresses accept
// NodePorts, and where a health-check node port listens. Every dataplane,
// the conntrack cleaner and the health servers read it from here.

// ipv4Loopback is the loopback address NodePorts answer on with
// LocalhostNodePorts: the one every node's lo has.
var ipv4Loopback = netip.MustParseAddr("127.0.0.1")

// NodePortIPs returns the node addresses of one family that accept
// NodePorts, or anyLocal when every local address does (ips is then nil;
// loopback included only if NodePortsOnLoopback says so).
func (c *Config) NodePortIPs(f Family) (ips []netip.Addr, anyLocal bool) {
	prefixes, all := c.nodePortPrefixes(f)
	if all {
		return nil, true
	}
	for _, ip := range c.NodeIPs {
		if FamilyOf(ip) == f && !ip.IsLoopback() && containsAddr(prefixes, ip) {
			ips = append(ips, ip)
		}
	}
	if c.NodePortsOnLoopback(f) {
		ips = append(ips, ipv4Loopback)
	}
	return ips, false
}

// NodePortsOnLoopback reports whether NodePorts answer on loopback in
// family f: IPv4 only, with LocalhostNodePorts, and when nodePortAddresses
// lets every address or 127.0.0.1 accept them (kube-proxy disables
// localhost NodePorts otherwise).
func (c *Config) NodePortsOnLoopback(f Family) bool {
	if f != IPv4 || !c.LocalhostNodePorts {
		return false
	}
	prefixes, all := c.nodePortPrefixes(f)
	return all || containsAddr(prefixes, ipv4Loopback)
}

// HealthCheckIPs returns the addresses of family f a health-check node
// port listens on, or anyLocal for the family's wildcard address: where
// kube-proxy's server listens, every node address in nodePortAddresses,
// loopback included when a prefix holds it.
func (c *Config) HealthCheckIPs(f Family) (ips []netip.Addr, anyLocal bool) {
	prefixes, all := c.nodePortPrefixes(f)
	if all {
		return nil, true
	}
	loopback := netip.IPv6Loopback()
	if f == IPv4 {
		loopback = ipv4Loopback
	}
	for _, ip := range append(append([]netip.Addr(nil), c.NodeIPs...), loopback) {
		if FamilyOf(ip) == f && containsAddr(prefixes, ip) && !slices.Contains(ips, ip) {
			ips = append(ips, ip)
		}
	}
	return ips, false
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
