package conntrack

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Filter decides which conntrack flows of one family are stale for a plan:
// UDP flows whose original destination is a Service address of a UDP port —
// ClusterIP, external IP or load-balancer IP with the port, or a node address
// with the NodePort — and whose reply source is not a serving endpoint
// (address and port) of that port. It implements
// netlink.CustomConntrackFilter and is pure; the zero value matches nothing.
type Filter struct {
	family plan.Family
	// services maps each ClusterIP, external and load-balancer IP with its
	// port to the serving endpoints behind it.
	services map[netip.AddrPort]endpointSet
	// nodePorts maps each NodePort to the serving endpoints behind it.
	nodePorts map[uint16]endpointSet
	// nodeIPs are the addresses that accept NodePorts; with anyNodeIP set,
	// every address but loopback and the Service addresses does.
	nodeIPs   map[netip.Addr]bool
	anyNodeIP bool
	serviceIP map[netip.Addr]bool
}

var _ netlink.CustomConntrackFilter = (*Filter)(nil)

// endpointSet holds serving endpoints. Several ports may claim the same
// address (two Services with the same external IP and port, say); the set is
// then their union, so that no endpoint still in use loses its flows.
type endpointSet map[netip.AddrPort]bool

// NewFilter returns the filter for the UDP ports of family f of p, and of
// removed, service ports that are gone: every UDP flow to an address of one
// of those that no port of p has taken over is stale.
//
// The addresses accepting NodePorts are the plan's node-port address set
// (Plan.NodePorts). When it is every local address, those are localIPs
// (the namespace's addresses) together with p.Config.NodeIPs; when both
// are empty, any address that is neither loopback nor a ClusterIP, external
// or load-balancer IP of the plan counts.
func NewFilter(p *plan.Plan, f plan.Family, localIPs []netip.Addr, removed ...*plan.ServicePort) *Filter {
	flt := &Filter{
		family:    f,
		services:  map[netip.AddrPort]endpointSet{},
		nodePorts: map[uint16]endpointSet{},
		nodeIPs:   map[netip.Addr]bool{},
		serviceIP: map[netip.Addr]bool{},
	}
	if p == nil {
		return flt
	}
	for _, sp := range p.PortsOf(f) {
		// A ClusterIP is a Service address whatever the protocol: an entry
		// to it is never NodePort traffic.
		for _, ip := range serviceIPs(sp) {
			flt.serviceIP[ip.Unmap()] = true
		}
		if sp.Protocol != v1.ProtocolUDP {
			continue
		}
		serving := liveSet(sp.Live)
		for _, ip := range serviceIPs(sp) {
			ap := netip.AddrPortFrom(ip.Unmap(), sp.Port)
			flt.services[ap] = union(flt.services[ap], serving)
		}
		if sp.NodePort != 0 {
			flt.nodePorts[sp.NodePort] = union(flt.nodePorts[sp.NodePort], serving)
		}
	}
	flt.addRemoved(f, removed)
	np := p.NodePorts(f)
	ips := np.IPs
	if np.AnyLocal {
		ips = append(append(ips, localIPs...), p.Config.NodeIPs...)
	}
	for _, ip := range ips {
		if ip = ip.Unmap(); plan.FamilyOf(ip) == f && np.Accepts(ip, func(netip.Addr) bool { return true }) {
			flt.nodeIPs[ip] = true
		}
	}
	flt.anyNodeIP = np.AnyLocal && len(flt.nodeIPs) == 0
	return flt
}

// addRemoved adds the addresses of removed UDP ports that no current port
// has, with no serving endpoint.
func (flt *Filter) addRemoved(f plan.Family, removed []*plan.ServicePort) {
	for _, sp := range removed {
		if sp == nil || sp.Family != f || sp.Protocol != v1.ProtocolUDP {
			continue
		}
		for _, ip := range serviceIPs(sp) {
			flt.serviceIP[ip.Unmap()] = true
			if ap := netip.AddrPortFrom(ip.Unmap(), sp.Port); flt.services[ap] == nil {
				flt.services[ap] = endpointSet{}
			}
		}
		if sp.NodePort != 0 && flt.nodePorts[sp.NodePort] == nil {
			flt.nodePorts[sp.NodePort] = endpointSet{}
		}
	}
}

// MatchConntrackFlow reports whether flow is stale and must be deleted.
func (flt *Filter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flt == nil || flow == nil || flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dst, ok := addrPort(flow.Forward.DstIP, flow.Forward.DstPort)
	if !ok || plan.FamilyOf(dst.Addr()) != flt.family {
		return false
	}
	serving, ok := flt.services[dst]
	if !ok {
		serving, ok = flt.nodePorts[dst.Port()]
		if !ok || !flt.isNodeIP(dst.Addr()) {
			return false
		}
	}
	// Without DNAT the reply comes from the Service address itself, which is
	// never a serving endpoint: such entries go too.
	replySrc, ok := addrPort(flow.Reverse.SrcIP, flow.Reverse.SrcPort)
	return ok && !serving[replySrc]
}

func (flt *Filter) isNodeIP(a netip.Addr) bool {
	if flt.anyNodeIP {
		return !a.IsLoopback() && !flt.serviceIP[a]
	}
	return flt.nodeIPs[a]
}

// serviceIPs are the addresses of a port that are matched with its port
// number: the ClusterIP, external IPs and load-balancer IPs.
func serviceIPs(sp *plan.ServicePort) []netip.Addr {
	out := make([]netip.Addr, 0, 1+len(sp.ExternalIPs)+len(sp.LoadBalancerIPs))
	if sp.ClusterIP.IsValid() {
		out = append(out, sp.ClusterIP)
	}
	out = append(out, sp.ExternalIPs...)
	return append(out, sp.LoadBalancerIPs...)
}

// liveSet holds a port's live endpoints (plan.ServicePort.Live): ready
// or terminating, they may still get traffic, and their flows must not be
// cut while they do.
func liveSet(live []netip.AddrPort) endpointSet {
	out := make(endpointSet, len(live))
	for _, e := range live {
		out[e] = true
	}
	return out
}

// union adds b to a, allocating a when nil; b is never modified, since one
// port's set is shared by all its addresses.
func union(a, b endpointSet) endpointSet {
	if a == nil {
		a = make(endpointSet, len(b))
	}
	for e := range b {
		a[e] = true
	}
	return a
}

func addrPort(ip net.IP, port uint16) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), port), true
}
