package plan

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
)

// Packet is the first packet of a connection as this node sees it.
type Packet struct {
	Src      netip.Addr
	Dst      netip.AddrPort
	Protocol v1.Protocol
	// FromHost is set when the packet starts on this node's own network
	// stack (not from a pod and not from the network).
	FromHost bool
}

// Action is what happens to a packet.
type Action string

// The actions.
const (
	Pass    Action = "PASS"    // not a service address; the proxy leaves it alone
	Forward Action = "FORWARD" // DNAT to one of the targets
	Reject  Action = "REJECT"  // refused at once (TCP reset / ICMP unreachable)
	Drop    Action = "DROP"    // silently dropped
)

// Target is one endpoint a packet may be sent to, and whether it is then
// masqueraded (SNAT to the node).
type Target struct {
	Endpoint   netip.AddrPort
	Masquerade bool
}

// Decision is what the node does with a packet, and why.
type Decision struct {
	Action          Action
	Service         Key
	Targets         []Target // for Forward: the candidates, each equally likely
	AffinitySeconds int32
	Reason          string
}

// Decide says what this node does with a packet. It is the reference every
// dataplane is tested against: a dataplane's tracer must reach the same
// decision for the same packet.
func (p *Plan) Decide(pkt Packet) Decision {
	for _, sp := range p.PortsOf(FamilyOf(pkt.Src)) {
		if sp.Protocol != pkt.Protocol {
			continue
		}
		kind := p.addressKind(sp, pkt.Dst)
		switch kind {
		case "":
			continue
		case "cluster IP":
			return p.decideInternal(sp, pkt)
		default:
			return p.decideExternal(sp, pkt, kind)
		}
	}
	for _, sp := range p.Ports {
		if sp.ClusterIP == pkt.Dst.Addr() {
			return Decision{Action: Reject, Reason: "cluster IP has no service port " + pkt.Dst.String() + "/" + string(pkt.Protocol)}
		}
	}
	return Decision{Action: Pass, Reason: "not a service address"}
}

// addressKind tells which of the port's addresses dst is, if any.
func (p *Plan) addressKind(sp *ServicePort, dst netip.AddrPort) string {
	a := dst.Addr()
	switch {
	case dst.Port() == sp.Port && a == sp.ClusterIP:
		return "cluster IP"
	case dst.Port() == sp.Port && slices.Contains(sp.ExternalIPs, a):
		return "external IP"
	case dst.Port() == sp.Port && slices.Contains(sp.LoadBalancerIPs, a):
		return "load-balancer IP"
	case sp.NodePort != 0 && dst.Port() == sp.NodePort && p.acceptsNodePort(a):
		return "node port"
	}
	return ""
}

// acceptsNodePort reports whether the node address a accepts NodePorts:
// every local address (all of 127.0.0.0/8 with localhost NodePorts), or
// exactly the listed ones (127.0.0.1 the only loopback one).
func (p *Plan) acceptsNodePort(a netip.Addr) bool {
	f := FamilyOf(a)
	if a.IsLoopback() && !p.Config.NodePortsOnLoopback(f) {
		return false
	}
	ips, anyLocal := p.Config.NodePortIPs(f)
	if anyLocal {
		return a.IsLoopback() || slices.Contains(p.Config.NodeIPs, a)
	}
	return slices.Contains(ips, a)
}

func (p *Plan) fromCluster(src netip.Addr) bool {
	return containsAddr(p.Config.ClusterCIDRs, src)
}

func (p *Plan) decideInternal(sp *ServicePort, pkt Packet) Decision {
	d := Decision{Service: sp.Key}
	if !sp.HasEndpoints() {
		d.Action, d.Reason = Reject, "service has no endpoints"
		return d
	}
	eps := sp.InternalEndpoints()
	if len(eps) == 0 {
		d.Action, d.Reason = Drop, "internalTrafficPolicy Local and no local endpoint on this node"
		return d
	}
	masq := p.Config.MasqueradeAll
	why := "cluster IP, masqueradeAll"
	if !masq && len(p.Config.ClusterCIDRsOf(sp.Family)) > 0 && !p.fromCluster(pkt.Src) {
		masq, why = true, "cluster IP from outside the cluster CIDR: masqueraded, so that replies come back through this node"
	}
	if !masq {
		why = "cluster IP from the pod network"
	}
	return p.forward(d, sp, eps, pkt, masq, why)
}

func (p *Plan) decideExternal(sp *ServicePort, pkt Packet, kind string) Decision {
	d := Decision{Service: sp.Key}
	if kind == "load-balancer IP" && len(sp.SourceRanges) > 0 && !containsAddr(sp.SourceRanges, pkt.Src) {
		d.Action, d.Reason = Drop, "source not in loadBalancerSourceRanges"
		return d
	}
	if !sp.HasEndpoints() {
		d.Action, d.Reason = Reject, "service has no endpoints"
		return d
	}
	switch {
	case !sp.ExternalLocal:
		return p.forward(d, sp, sp.ClusterEndpoints, pkt, true, kind+", externalTrafficPolicy Cluster: masqueraded, so that replies come back through this node (the endpoint may be on another)")
	case pkt.FromHost:
		return p.forward(d, sp, sp.ClusterEndpoints, pkt, true, kind+" from this node uses cluster endpoints, masqueraded")
	case len(p.Config.ClusterCIDRsOf(sp.Family)) > 0 && p.fromCluster(pkt.Src):
		return p.forward(d, sp, sp.ClusterEndpoints, pkt, false, kind+" from a pod uses cluster endpoints")
	case len(sp.LocalEndpoints) == 0:
		d.Action, d.Reason = Drop, "externalTrafficPolicy Local and no local endpoint on this node"
		return d
	}
	return p.forward(d, sp, sp.LocalEndpoints, pkt, false, kind+", externalTrafficPolicy Local keeps the client IP")
}

func (p *Plan) forward(d Decision, sp *ServicePort, eps []netip.AddrPort, pkt Packet, masq bool, why string) Decision {
	d.Action, d.Reason, d.AffinitySeconds = Forward, why, sp.AffinitySeconds
	for _, e := range eps {
		// Hairpin: a pod reaching itself through its Service must see the
		// node as the source, or it would answer itself directly.
		d.Targets = append(d.Targets, Target{Endpoint: e, Masquerade: masq || e.Addr() == pkt.Src})
	}
	return d
}
