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

// Target is one endpoint a packet may be sent to, and whether it is then
// masqueraded (SNAT to the node).
type Target struct {
	Endpoint   netip.AddrPort
	Masquerade bool
}

// Decision is what the node does with a packet, and why.
type Decision struct {
	Action  Action
	Service Key
	Targets []Target // for Forward: the candidates, each equally likely
	// Scheduler is how the candidates take turns for Forward: a scheduler
	// (ServicePort.Scheduler: "rr" strict rotation, "sh" one per source,
	// ...), or "" for a random choice.
	Scheduler       string
	AffinitySeconds int32
	Reason          string
}

// Decide says what this node does with a packet. It is the reference every
// dataplane is tested against: a dataplane's tracer must reach the same
// decision for the same packet. It reads the same outcomes the dataplanes
// translate (the node-port address set, the firewall, the routes, the
// pools, the hairpin set), so the two cannot disagree by construction.
func (p *Plan) Decide(pkt Packet) Decision {
	for _, sp := range p.PortsOf(FamilyOf(pkt.Src)) {
		if sp.Protocol != pkt.Protocol {
			continue
		}
		if kind := p.addressKind(sp, pkt.Dst); kind != "" {
			return decide(sp, kind, pkt)
		}
	}
	for _, sp := range p.Ports {
		if sp.ClusterIP == pkt.Dst.Addr() {
			return Decision{Action: Reject, Reason: "cluster IP has no service port " + pkt.Dst.String() + "/" + string(pkt.Protocol)}
		}
	}
	return Decision{Action: Pass, Reason: "not a service address"}
}

// The kinds of Service address, as Decide names them in its reasons.
const (
	kindClusterIP    = "cluster IP"
	kindExternalIP   = "external IP"
	kindLoadBalancer = "load-balancer IP"
	kindNodePort     = "node port"
)

// addressKind tells which of the port's addresses dst is, if any.
func (p *Plan) addressKind(sp *ServicePort, dst netip.AddrPort) string {
	a := dst.Addr()
	switch {
	case dst.Port() == sp.Port && a == sp.ClusterIP:
		return kindClusterIP
	case dst.Port() == sp.Port && slices.Contains(sp.ExternalIPs, a):
		return kindExternalIP
	case dst.Port() == sp.Port && slices.Contains(sp.LoadBalancerIPs, a):
		return kindLoadBalancer
	case sp.NodePort != 0 && dst.Port() == sp.NodePort && p.NodePorts(FamilyOf(a)).Accepts(a, p.isNodeIP):
		return kindNodePort
	}
	return ""
}

func (p *Plan) isNodeIP(a netip.Addr) bool { return slices.Contains(p.Config.NodeIPs, a) }

// decide follows the port's outcomes for a packet to one of its addresses.
func decide(sp *ServicePort, kind string, pkt Packet) Decision {
	d := Decision{Service: sp.Key}
	if kind == kindLoadBalancer && !sp.Firewall.Admits(pkt.Src) {
		d.Action, d.Reason = sp.Firewall.Outside, "source not in loadBalancerSourceRanges"
		return d
	}
	route := &sp.External
	if kind == kindClusterIP {
		route = &sp.Internal
	}
	o := route.For(pkt.Src, pkt.FromHost)
	d.Action, d.Reason = o.Action, o.Why
	if kind != kindClusterIP && o.Action == Forward {
		d.Reason = kind + ", " + o.Why
	}
	if o.Action != Forward {
		return d
	}
	masq := o.Masquerade.Applies(pkt.Src)
	if o.Masquerade.Mode == MasqUnlessFrom {
		d.Reason += map[bool]string{true: " from outside the pod network: masqueraded, so that replies come back through this node",
			false: " from the pod network"}[masq]
	}
	d.AffinitySeconds, d.Scheduler = sp.AffinitySeconds, sp.Scheduler
	for _, e := range sp.Backends(o.Pool) {
		d.Targets = append(d.Targets, Target{Endpoint: e, Masquerade: masq || sp.IsHairpin(pkt.Src, e)})
	}
	return d
}
