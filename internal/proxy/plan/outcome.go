package plan

import (
	"net/netip"
	"slices"
)

// The outcomes: what the plan resolves for each kind of traffic to a
// service port, in terms every dataplane can write as rules without
// deciding anything. A route says which sources are treated apart and what
// each gets; an outcome forwards to a pool of endpoints (masqueraded or
// not), rejects, or drops.

// Action is what happens to a packet.
type Action string

// The actions.
const (
	Pass    Action = "PASS"    // not a service address; the proxy leaves it alone
	Forward Action = "FORWARD" // DNAT to one of the targets
	Reject  Action = "REJECT"  // refused at once (TCP reset / ICMP unreachable)
	Drop    Action = "DROP"    // silently dropped
)

// Pool names one of a port's two endpoint pools.
type Pool uint8

// The pools.
const (
	// ClusterPool is the ready endpoints, narrowed by topology, else those
	// serving while terminating.
	ClusterPool Pool = iota + 1
	// LocalPool is this node's ready endpoints, else its serving and
	// terminating ones.
	LocalPool
)

func (p Pool) String() string {
	if p == LocalPool {
		return "local"
	}
	return "cluster"
}

// Outcome is what one kind of traffic gets.
type Outcome struct {
	Action Action // Forward, Reject or Drop
	// Pool and Masquerade are set for Forward: the endpoints one of which
	// takes the connection, and when its source becomes the node's.
	Pool       Pool
	Masquerade Masquerade
	// Why says, in words, why the plan chose this outcome.
	Why string
}

// Route is what traffic to one kind of address gets: the first bypass whose
// sources match a packet decides, else Default. Every bypass forwards, and
// the bypasses of one route share one pool (dataplanes may rely on both).
type Route struct {
	Bypasses []Bypass
	Default  Outcome
}

// Bypass sends traffic from some sources to a forward outcome of its own:
// under externalTrafficPolicy Local, pods and the node itself use every
// endpoint, as if they had gone out to the load balancer and come back.
type Bypass struct {
	From Sources
	Outcome
}

// Sources is a class of packet sources a dataplane can write as a match.
// Exactly one of its fields is set.
type Sources struct {
	// Node matches packets the node itself sends, from any of its own
	// addresses (nftables "fib saddr type local", iptables "-m addrtype
	// --src-type LOCAL").
	Node bool
	// Prefixes matches packets whose source is in one of them (the pod
	// network).
	Prefixes []netip.Prefix
}

// MasqMode says when a forwarded packet's source becomes the node's.
type MasqMode uint8

// The masquerade modes.
const (
	MasqNever MasqMode = iota
	MasqAlways
	// MasqUnlessFrom masquerades packets whose source is in none of
	// Masquerade.Except.
	MasqUnlessFrom
)

// Masquerade is when an outcome masquerades, besides hairpin traffic (see
// ServicePort.Hairpin).
type Masquerade struct {
	Mode   MasqMode
	Except []netip.Prefix // for MasqUnlessFrom
}

// Firewall filters traffic to the load-balancer IPs by source. The zero
// Firewall filters nothing.
type Firewall struct {
	// Allow lists the sources that pass; empty: all do.
	Allow []netip.Prefix
	// Outside is what traffic from any other source gets (Drop).
	Outside Action
}

// HealthCheck is a health-check node port (externalTrafficPolicy Local):
// the load balancer asks it whether this node has endpoints to send to.
type HealthCheck struct {
	NodePort uint16 // 0: none
	// LocalEndpoints are the distinct addresses of this node's ready
	// endpoints, sorted: terminating endpoints are not ready, and a node
	// with only those must fail the check.
	LocalEndpoints []netip.Addr
}

// For returns the outcome for a packet from src; fromNode says the node
// itself sends it.
func (r *Route) For(src netip.Addr, fromNode bool) Outcome {
	for _, b := range r.Bypasses {
		if b.From.Match(src, fromNode) {
			return b.Outcome
		}
	}
	return r.Default
}

// Forwards reports whether any traffic on the route is forwarded.
func (r *Route) Forwards() bool {
	return r.Default.Action == Forward || len(r.Bypasses) > 0
}

// Pools returns the pools the route forwards to, each once, in order of use.
func (r *Route) Pools() []Pool {
	var out []Pool
	for _, b := range r.Bypasses {
		if !slices.Contains(out, b.Pool) {
			out = append(out, b.Pool)
		}
	}
	if r.Default.Action == Forward && !slices.Contains(out, r.Default.Pool) {
		out = append(out, r.Default.Pool)
	}
	return out
}

// Match reports whether a packet from src is of the class.
func (s Sources) Match(src netip.Addr, fromNode bool) bool {
	if s.Node {
		return fromNode
	}
	return containsAddr(s.Prefixes, src)
}

// Applies reports whether a packet from src is masqueraded.
func (m Masquerade) Applies(src netip.Addr) bool {
	switch m.Mode {
	case MasqAlways:
		return true
	case MasqUnlessFrom:
		return !containsAddr(m.Except, src)
	}
	return false
}

// Admits reports whether the firewall lets a packet from src through.
func (f *Firewall) Admits(src netip.Addr) bool {
	return len(f.Allow) == 0 || containsAddr(f.Allow, src)
}

// IsHairpin reports whether a packet from src forwarded to ep goes back to
// its own sender through this node, and so must be masqueraded.
func (sp *ServicePort) IsHairpin(src netip.Addr, ep netip.AddrPort) bool {
	return ep.Addr() == src && slices.Contains(sp.Hairpin, src)
}
