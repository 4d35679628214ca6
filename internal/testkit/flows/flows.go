package flows

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Flow is one packet and the verdict node1 must give it.
type Flow struct {
	Name string
	Pkt  plan.Packet
	Want Expect
}

// Expect is a flow's expected verdict.
type Expect struct {
	Action plan.Action
	// Endpoints is the candidate set for Forward, sorted; each candidate is
	// equally likely. Empty for every other action.
	Endpoints []netip.AddrPort
	// Masquerade says which candidates are SNATed to the node.
	Masquerade Masq
	// AffinitySeconds is the ClientIP affinity timeout for Forward; 0 for
	// none.
	AffinitySeconds int32
	// Scheduler is the scheduler the Service chose, which takes the
	// candidates in turn for Forward; "" for a random choice. A dataplane
	// that cannot express it chooses at random (FlowsFor).
	Scheduler string
}

// Masq says which of a flow's candidate endpoints are masqueraded.
type Masq int

// The masquerade expectations.
const (
	// MasqNone: no candidate is masqueraded; the endpoint sees the client.
	MasqNone Masq = iota
	// MasqAll: every candidate is masqueraded.
	MasqAll
	// MasqHairpin: only the candidate that is the packet's own source (a
	// pod reaching itself through its Service) is masqueraded.
	MasqHairpin
)

func (m Masq) String() string {
	switch m {
	case MasqNone:
		return "none"
	case MasqAll:
		return "all"
	case MasqHairpin:
		return "hairpin only"
	}
	return fmt.Sprintf("Masq(%d)", int(m))
}

// WantTargets spells the expectation out per endpoint, sorted by endpoint:
// what a Forward decision's Targets must be.
func (f Flow) WantTargets() []plan.Target {
	var out []plan.Target
	for _, ep := range f.Want.Endpoints {
		masq := f.Want.Masquerade == MasqAll || (f.Want.Masquerade == MasqHairpin && ep.Addr() == f.Pkt.Src)
		out = append(out, plan.Target{Endpoint: ep, Masquerade: masq})
	}
	return out
}

// Compare checks a decision against a flow's expectation: the action, the
// candidate endpoints as a set (in any order, each once), whether each is
// masqueraded, and the affinity timeout. The Service and the reason are not
// compared. The error explains every difference.
func Compare(f Flow, got plan.Decision) error {
	want := plan.Decision{Action: f.Want.Action, Targets: f.WantTargets(), AffinitySeconds: f.Want.AffinitySeconds, Scheduler: f.Want.Scheduler}
	diffs := plan.DiffDecisions(want, got)
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s\n  got  %s\n  want %s (masquerade: %s)", f, strings.Join(diffs, "; "), showDecision(got), f.Want, f.Want.Masquerade)
}

// Check fails t when a decision does not match a flow's expectation.
func Check(t testing.TB, f Flow, got plan.Decision) {
	t.Helper()
	if err := Compare(f, got); err != nil {
		t.Error(err)
	}
}

func (f Flow) String() string {
	from := "from " + f.Pkt.Src.String()
	if f.Pkt.FromHost {
		from = "from the host (" + f.Pkt.Src.String() + ")"
	}
	return fmt.Sprintf("%q (%s %s to %s)", f.Name, f.Pkt.Protocol, from, f.Pkt.Dst)
}

func (e Expect) String() string {
	if e.Action != plan.Forward {
		return string(e.Action)
	}
	s := fmt.Sprintf("%s to %v, masquerade %s", e.Action, e.Endpoints, e.Masquerade)
	if e.AffinitySeconds != 0 {
		s += fmt.Sprintf(", affinity %ds", e.AffinitySeconds)
	}
	if e.Scheduler != "" {
		s += ", scheduler " + e.Scheduler
	}
	return s
}

func showDecision(d plan.Decision) string {
	var b strings.Builder
	b.WriteString(string(d.Action))
	if len(d.Targets) > 0 {
		b.WriteString(" to [")
		for i, t := range d.Targets {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString(t.Endpoint.String())
			if t.Masquerade {
				b.WriteString("+masq")
			}
		}
		b.WriteString("]")
	}
	if d.AffinitySeconds != 0 {
		fmt.Fprintf(&b, ", affinity %ds", d.AffinitySeconds)
	}
	if d.Scheduler != "" {
		fmt.Fprintf(&b, ", scheduler %s", d.Scheduler)
	}
	if d.Reason != "" {
		fmt.Fprintf(&b, " (%s)", d.Reason)
	}
	return b.String()
}

// Validate checks that a flow is well formed: sorted, unique candidates only
// for Forward, a masquerade mode that fits the packet (hairpin only when the
// source is a candidate), affinity only for Forward. The table's own test
// runs it on every flow; dataplanes that add flows of their own can too.
func (f Flow) Validate() error {
	var errs []error
	w := f.Want
	if f.Name == "" {
		errs = append(errs, errors.New("no name"))
	}
	if !f.Pkt.Src.IsValid() || !f.Pkt.Dst.IsValid() || f.Pkt.Protocol == "" {
		errs = append(errs, errors.New("incomplete packet"))
	}
	if w.Action == plan.Forward {
		if len(w.Endpoints) == 0 {
			errs = append(errs, errors.New("forward without endpoints"))
		}
		if !slices.IsSortedFunc(w.Endpoints, netip.AddrPort.Compare) || len(slices.Compact(slices.Clone(w.Endpoints))) != len(w.Endpoints) {
			errs = append(errs, errors.New("endpoints not sorted and unique"))
		}
		selfIsEndpoint := slices.ContainsFunc(w.Endpoints, func(ep netip.AddrPort) bool { return ep.Addr() == f.Pkt.Src })
		switch {
		case w.Masquerade == MasqHairpin && !selfIsEndpoint:
			errs = append(errs, errors.New("hairpin masquerade, but the source is no candidate"))
		case w.Masquerade == MasqNone && selfIsEndpoint:
			errs = append(errs, errors.New("the source is a candidate: hairpin traffic is masqueraded"))
		}
	} else if len(w.Endpoints) > 0 || w.Masquerade != MasqNone || w.AffinitySeconds != 0 || w.Scheduler != "" {
		errs = append(errs, fmt.Errorf("%s with endpoints, masquerade, affinity or scheduler", w.Action))
	}
	return errors.Join(errs...)
}

// FlowsFor returns the flows of FixtureFor(caps): a scheduler the
// dataplane cannot express becomes a random choice.
func FlowsFor(caps plan.Capabilities) []Flow {
	out := Flows()
	for i := range out {
		if s := out[i].Want.Scheduler; out[i].Want.Action == plan.Forward && (s == "" || !caps.Expresses(s)) {
			out[i].Want.Scheduler = caps.DefaultScheduler
		}
	}
	return out
}

// Flows returns the packet-flow table for Fixture, seen from node1, as a
// dataplane that expresses every scheduler gives it (FlowsFor for others).
func Flows() []Flow {
	tcp, udp, sctp := v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP
	fwd := func(m Masq, eps ...string) Expect {
		e := Expect{Action: plan.Forward, Masquerade: m}
		for _, s := range eps {
			e.Endpoints = append(e.Endpoints, netip.MustParseAddrPort(s))
		}
		slices.SortFunc(e.Endpoints, netip.AddrPort.Compare)
		return e
	}
	sticky := func(sec int32, e Expect) Expect { e.AffinitySeconds = sec; return e }
	scheduled := func(s string, e Expect) Expect { e.Scheduler = s; return e }
	var (
		reject = Expect{Action: plan.Reject}
		drop   = Expect{Action: plan.Drop}
		pass   = Expect{Action: plan.Pass}
	)
	flow := func(name, src, dst string, proto v1.Protocol, want Expect) Flow {
		return Flow{Name: name, Pkt: plan.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddrPort(dst), Protocol: proto}, Want: want}
	}
	host := func(name, dst string, proto v1.Protocol, want Expect) Flow {
		src := NodeIP
		if netip.MustParseAddrPort(dst).Addr().Is6() {
			src = NodeIPv6
		}
		f := flow(name, src, dst, proto, want)
		f.Pkt.FromHost = true
		return f
	}
	np := func(port string) string { return NodeIP + ":" + port }
	np6 := func(port string) string { return "[" + NodeIPv6 + "]:" + port }

	return []Flow{
		// ClusterIP, one and three endpoints.
		flow("pod to ClusterIP, one remote endpoint", PodB, "10.96.0.10:80", tcp, fwd(MasqNone, "10.244.2.2:8080")),
		flow("pod to ClusterIP, three endpoints", PodB, "10.96.0.11:80", tcp, fwd(MasqNone, "10.244.1.2:8080", "10.244.2.2:8080", "10.244.2.3:8080")),
		flow("hairpin: pod to ClusterIP whose endpoint is itself", PodA, "10.96.0.11:80", tcp, fwd(MasqHairpin, "10.244.1.2:8080", "10.244.2.2:8080", "10.244.2.3:8080")),
		host("host to ClusterIP: masqueraded", "10.96.0.11:80", tcp, fwd(MasqAll, "10.244.1.2:8080", "10.244.2.2:8080", "10.244.2.3:8080")),
		flow("outside client to ClusterIP: masqueraded", Client, "10.96.0.10:80", tcp, fwd(MasqAll, "10.244.2.2:8080")),
		flow("ClusterIP, undefined port: rejected", PodB, "10.96.0.10:8080", tcp, reject),

		// NodePort, externalTrafficPolicy Cluster.
		flow("client to NodePort, Cluster policy: masqueraded", Client, np("30012"), tcp, fwd(MasqAll, "10.244.1.3:8080", "10.244.2.3:8080")),
		flow("pod to NodePort, Cluster policy: masqueraded", PodA, np("30012"), tcp, fwd(MasqAll, "10.244.1.3:8080", "10.244.2.3:8080")),
		host("host to NodePort, Cluster policy: masqueraded", np("30012"), tcp, fwd(MasqAll, "10.244.1.3:8080", "10.244.2.3:8080")),
		flow("pod to the ClusterIP of a NodePort Service", PodA, "10.96.0.12:80", tcp, fwd(MasqNone, "10.244.1.3:8080", "10.244.2.3:8080")),
		flow("NodePort number on the ClusterIP: rejected", Client, "10.96.0.12:30012", tcp, reject),
		flow("NodePort on the other node's IP: not ours", Client, Node2IP+":30012", tcp, pass),
		host("NodePort on 127.0.0.1: never by default", "127.0.0.1:30012", tcp, pass),
		flow("IPv4-only NodePort on the IPv6 node IP: not a service", Client6, np6("30012"), tcp, pass),

		// LoadBalancer + NodePort, externalTrafficPolicy Local, local endpoint.
		flow("client to LB IP, Local policy: local endpoint, client IP kept", Client, "203.0.113.13:80", tcp, fwd(MasqNone, "10.244.1.2:8081")),
		flow("client to NodePort, Local policy: local endpoint, client IP kept", Other, np("30013"), tcp, fwd(MasqNone, "10.244.1.2:8081")),
		flow("pod to LB IP, Local policy: cluster endpoints, not masqueraded", PodB, "203.0.113.13:80", tcp, fwd(MasqNone, "10.244.1.2:8081", "10.244.2.2:8081")),
		flow("hairpin: pod to LB IP, Local policy", PodA, "203.0.113.13:80", tcp, fwd(MasqHairpin, "10.244.1.2:8081", "10.244.2.2:8081")),
		host("host to LB IP, Local policy: cluster endpoints, masqueraded", "203.0.113.13:80", tcp, fwd(MasqAll, "10.244.1.2:8081", "10.244.2.2:8081")),
		host("host to NodePort, Local policy: cluster endpoints, masqueraded", np("30013"), tcp, fwd(MasqAll, "10.244.1.2:8081", "10.244.2.2:8081")),
		flow("pod to ClusterIP of a Local-policy Service: all endpoints", PodB, "10.96.0.13:80", tcp, fwd(MasqNone, "10.244.1.2:8081", "10.244.2.2:8081")),

		// NodePort, externalTrafficPolicy Local, remote endpoints only.
		flow("client to NodePort, Local policy, no local endpoint: dropped", Client, np("30014"), tcp, drop),
		flow("pod to NodePort, Local policy, no local endpoint: cluster endpoints", PodB, np("30014"), tcp, fwd(MasqNone, "10.244.2.2:8082", "10.244.2.3:8082")),
		host("host to NodePort, Local policy, no local endpoint: cluster endpoints, masqueraded", np("30014"), tcp, fwd(MasqAll, "10.244.2.2:8082", "10.244.2.3:8082")),

		// internalTrafficPolicy Local.
		flow("pod to ClusterIP, internal Local policy: local endpoint only", PodA, "10.96.0.15:80", tcp, fwd(MasqNone, "10.244.1.3:8083")),
		host("host to ClusterIP, internal Local policy: local endpoint, masqueraded", "10.96.0.15:80", tcp, fwd(MasqAll, "10.244.1.3:8083")),
		flow("pod to ClusterIP, internal Local policy, no local endpoint: dropped", PodA, "10.96.0.16:80", tcp, drop),
		host("host to ClusterIP, internal Local policy, no local endpoint: dropped", "10.96.0.16:80", tcp, drop),

		// Session affinity.
		flow("pod to ClusterIP with ClientIP affinity: default timeout", PodB, "10.96.0.17:80", tcp, sticky(10800, fwd(MasqNone, "10.244.1.2:8085", "10.244.2.2:8085"))),
		flow("client to NodePort with ClientIP affinity", Client, np("30017"), tcp, sticky(10800, fwd(MasqAll, "10.244.1.2:8085", "10.244.2.2:8085"))),
		flow("pod to ClusterIP with ClientIP affinity: 600s timeout", PodB, "10.96.0.18:80", tcp, sticky(600, fwd(MasqNone, "10.244.2.3:8086"))),

		// loadBalancerSourceRanges.
		flow("client inside the source ranges to LB IP: masqueraded", Client, "203.0.113.19:443", tcp, fwd(MasqAll, "10.244.1.3:8443", "10.244.2.3:8443")),
		flow("client outside the source ranges to LB IP: dropped", Other, "203.0.113.19:443", tcp, drop),
		flow("pod outside the source ranges to LB IP: dropped", PodA, "203.0.113.19:443", tcp, drop),
		flow("client outside the source ranges to the NodePort: not filtered", Other, np("30019"), tcp, fwd(MasqAll, "10.244.1.3:8443", "10.244.2.3:8443")),
		flow("LB IP, undefined port: not a service", Client, "203.0.113.19:80", tcp, pass),
		// A node holding the VIP sees its own packets to it come back from
		// the VIP: admitted, since the ranges admit the node.
		{Name: "node holding the LB IP, source the VIP: admitted", Pkt: plan.Packet{Src: netip.MustParseAddr("203.0.113.19"),
			Dst: netip.MustParseAddrPort("203.0.113.19:443"), Protocol: tcp, FromHost: true}, Want: fwd(MasqAll, "10.244.1.3:8443", "10.244.2.3:8443")},

		// externalIPs.
		flow("client to external IP, Cluster policy: masqueraded", Client, "203.0.113.20:80", tcp, fwd(MasqAll, "10.244.2.2:8087")),
		flow("pod to external IP, Cluster policy: masqueraded", PodB, "203.0.113.20:80", tcp, fwd(MasqAll, "10.244.2.2:8087")),
		flow("external IP, undefined port: not a service", Client, "203.0.113.20:81", tcp, pass),
		flow("client to external IP, Local policy: local endpoint, client IP kept", Other, "203.0.113.21:80", tcp, fwd(MasqNone, "10.244.1.2:8088")),
		host("host to external IP, Local policy: cluster endpoints, masqueraded", "203.0.113.21:80", tcp, fwd(MasqAll, "10.244.1.2:8088", "10.244.2.3:8088")),
		flow("pod to external IP, Local policy: cluster endpoints", PodB, "203.0.113.21:80", tcp, fwd(MasqNone, "10.244.1.2:8088", "10.244.2.3:8088")),

		// No endpoints: rejected on every address.
		flow("pod to ClusterIP without endpoints: rejected", PodB, "10.96.0.22:80", tcp, reject),
		host("host to ClusterIP without endpoints: rejected", "10.96.0.22:80", tcp, reject),
		flow("client to NodePort without endpoints: rejected", Client, np("30022"), tcp, reject),
		flow("client to LB IP without endpoints: rejected", Client, "203.0.113.22:80", tcp, reject),
		flow("client to external IP without endpoints: rejected", Client, "203.0.113.23:80", tcp, reject),

		// UDP.
		flow("pod to UDP ClusterIP", PodA, "10.96.0.23:53", udp, fwd(MasqNone, "10.244.1.3:5353", "10.244.2.3:5353")),
		host("host to UDP ClusterIP: masqueraded", "10.96.0.23:53", udp, fwd(MasqAll, "10.244.1.3:5353", "10.244.2.3:5353")),
		flow("TCP to a UDP-only ClusterIP port: rejected", PodA, "10.96.0.23:53", tcp, reject),

		// Dual-stack and IPv6.
		flow("pod to dual-stack ClusterIP, IPv4", PodB, "10.96.0.24:80", tcp, fwd(MasqNone, "10.244.1.2:8089", "10.244.2.2:8089")),
		flow("pod to dual-stack ClusterIP, IPv6", PodB6, "[fd00:10:96::24]:80", tcp, fwd(MasqNone, "[fd00:10:244:1::2]:8089", "[fd00:10:244:2::2]:8089")),
		flow("hairpin: IPv6 pod to ClusterIP whose endpoint is itself", PodA6, "[fd00:10:96::24]:80", tcp, fwd(MasqHairpin, "[fd00:10:244:1::2]:8089", "[fd00:10:244:2::2]:8089")),
		flow("IPv6 client to ClusterIP: masqueraded", Client6, "[fd00:10:96::24]:80", tcp, fwd(MasqAll, "[fd00:10:244:1::2]:8089", "[fd00:10:244:2::2]:8089")),
		flow("IPv6 client to NodePort: masqueraded", Client6, np6("30024"), tcp, fwd(MasqAll, "[fd00:10:244:1::2]:8089", "[fd00:10:244:2::2]:8089")),
		flow("IPv6 client to IPv6 LB IP: masqueraded", Client6, "[2001:db8:2::24]:80", tcp, fwd(MasqAll, "[fd00:10:244:1::2]:8089", "[fd00:10:244:2::2]:8089")),
		flow("IPv4 client to IPv4 LB IP of a dual-stack Service", Client, "203.0.113.24:80", tcp, fwd(MasqAll, "10.244.1.2:8089", "10.244.2.2:8089")),
		flow("IPv6 ClusterIP, undefined port: rejected", PodB6, "[fd00:10:96::24]:81", tcp, reject),
		flow("IPv6 client to NodePort, Local policy: local endpoint", Client6, np6("30026"), tcp, fwd(MasqNone, "[fd00:10:244:1::3]:8090")),
		flow("IPv6 pod to NodePort, Local policy: cluster endpoints", PodA6, np6("30026"), tcp, fwd(MasqNone, "[fd00:10:244:1::3]:8090", "[fd00:10:244:2::3]:8090")),
		host("IPv6 host to NodePort, Local policy: cluster endpoints, masqueraded", np6("30026"), tcp, fwd(MasqAll, "[fd00:10:244:1::3]:8090", "[fd00:10:244:2::3]:8090")),
		flow("IPv6-only NodePort on the IPv4 node IP: not a service", Client, np("30026"), tcp, pass),

		// Terminating endpoints only.
		flow("pod to ClusterIP, terminating endpoints only: serving ones", PodA, "10.96.0.27:80", tcp, fwd(MasqNone, "10.244.1.3:8091", "10.244.2.2:8091")),
		flow("client to NodePort, Local policy, terminating endpoints only: local serving one", Client, np("30027"), tcp, fwd(MasqNone, "10.244.1.3:8091")),

		// Multi-port.
		flow("multi-port: first port", PodA, "10.96.0.28:80", tcp, fwd(MasqNone, "10.244.1.3:8092", "10.244.2.2:8092")),
		flow("multi-port: second port", PodA, "10.96.0.28:9090", tcp, fwd(MasqNone, "10.244.1.3:9100", "10.244.2.2:9100")),
		flow("multi-port: UDP port", PodA, "10.96.0.28:514", udp, fwd(MasqNone, "10.244.1.3:5514", "10.244.2.2:5514")),
		flow("multi-port: undefined port rejected", PodA, "10.96.0.28:8080", tcp, reject),

		// SCTP.
		flow("pod to SCTP ClusterIP", PodA, "10.96.0.30:9999", sctp, fwd(MasqNone, "10.244.2.2:9999")),
		flow("client to SCTP NodePort: masqueraded", Client, np("30030"), sctp, fwd(MasqAll, "10.244.2.2:9999")),
		flow("TCP to an SCTP-only ClusterIP port: rejected", PodA, "10.96.0.30:9999", tcp, reject),

		// Topology.
		flow("zone hints: endpoints for zone-a only", PodB, "10.96.0.29:80", tcp, fwd(MasqNone, "10.244.1.2:8093", "10.244.2.3:8093")),

		// Schedulers chosen by annotation.
		flow("pod to ClusterIP, round robin", PodB, "10.96.0.31:80", tcp, scheduled("rr", fwd(MasqNone, "10.244.1.2:8094", "10.244.2.2:8094", "10.244.2.3:8094"))),
		flow("client to NodePort, round robin: masqueraded", Client, np("30031"), tcp, scheduled("rr", fwd(MasqAll, "10.244.1.2:8094", "10.244.2.2:8094", "10.244.2.3:8094"))),
		host("host to ClusterIP, round robin: masqueraded", "10.96.0.31:80", tcp, scheduled("rr", fwd(MasqAll, "10.244.1.2:8094", "10.244.2.2:8094", "10.244.2.3:8094"))),
		flow("pod to ClusterIP, source hashing", PodA, "10.96.0.32:80", tcp, scheduled("sh", fwd(MasqNone, "10.244.1.3:8095", "10.244.2.2:8095"))),
		flow("IPv6 pod to ClusterIP, source hashing", PodA6, "[fd00:10:96::32]:80", tcp, scheduled("sh", fwd(MasqNone, "[fd00:10:244:1::3]:8095", "[fd00:10:244:2::2]:8095"))),
		flow("pod to ClusterIP, least connection", PodA, "10.96.0.33:80", tcp, scheduled("lc", fwd(MasqNone, "10.244.2.2:8096", "10.244.2.3:8096"))),
		flow("pod to ClusterIP, round robin with ClientIP affinity", PodB, "10.96.0.34:80", tcp, scheduled("rr", sticky(600, fwd(MasqNone, "10.244.1.2:8097", "10.244.2.2:8097")))),

		// Not a service address.
		flow("unallocated ClusterIP: not a service", PodA, "10.96.0.99:80", tcp, pass),
		flow("pod to pod: not a service", PodA, "10.244.2.2:8080", tcp, pass),
		flow("client to the node's own port: not a service", Client, np("22"), tcp, pass),
		flow("pod to the outside: not a service", PodA, Other+":443", tcp, pass),
		flow("unused address in the LB range: not a service", Client, "203.0.113.99:80", tcp, pass),
		flow("IPv6 pod to the outside: not a service", PodA6, "[2001:db8:2::99]:443", tcp, pass),
	}
}
