package conntrack

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// dnsPlan is the plan most filter tests use:
//
//   - ns/dns, LoadBalancer, 10.96.0.10 / fd00:10:96::10, port "dns" 53/UDP
//     with NodePort 30053 and port "dns-tcp" 53/TCP, external IPs
//     203.0.113.10 / 2001:db8:2::10, LB IPs 203.0.113.20 / 2001:db8:2::20;
//     endpoints on port 5353: 10.244.1.2 ready, 10.244.1.3 serving and
//     terminating, 10.244.1.4 terminating and not serving, 10.244.1.5 not
//     ready, fd00:10:244:1::2 ready.
//   - ns/shared, 10.96.0.11, 53/UDP, the same external IP 203.0.113.10,
//     endpoint 10.244.2.2:5353.
//   - ns/empty, 10.96.0.20, 53/UDP, no endpoints.
//   - ns/web, 10.96.0.30, 80/TCP, endpoint 10.244.1.7:8080.
func dnsPlan(t *testing.T, cfg plan.Config) *plan.Plan {
	dns := objects.Service(testNS, "dns", objects.Type(v1.ServiceTypeLoadBalancer), objects.ClusterIPs("10.96.0.10", "fd00:10:96::10"),
		objects.Port("dns", v1.ProtocolUDP, 53, 30053), objects.Port("dns-tcp", v1.ProtocolTCP, 53, 30054))
	dns.Spec.ExternalIPs = []string{"203.0.113.10", "2001:db8:2::10"}
	dns.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "203.0.113.20"}, {IP: "2001:db8:2::20"}}
	shared := objects.Service(testNS, "shared", objects.ClusterIPs("10.96.0.11"), objects.Port("", v1.ProtocolUDP, 53, 0))
	shared.Spec.ExternalIPs = []string{"203.0.113.10"}
	dnsPorts := []discovery.EndpointPort{objects.EndpointPort("dns", v1.ProtocolUDP, 5353), objects.EndpointPort("dns-tcp", v1.ProtocolTCP, 5353)}
	return build(t, cfg,
		[]*v1.Service{
			dns, shared,
			objects.Service(testNS, "empty", objects.ClusterIPs("10.96.0.20"), objects.Port("", v1.ProtocolUDP, 53, 0)),
			objects.Service(testNS, "web", objects.ClusterIPs("10.96.0.30"), objects.Port("", v1.ProtocolTCP, 80, 0)),
		},
		objects.Slice(testNS, "dns-v4", "dns", discovery.AddressTypeIPv4, dnsPorts,
			readyEP("10.244.1.2"),
			objects.Endpoint("10.244.1.3", objects.Conditions(false, true, true)),
			objects.Endpoint("10.244.1.4", objects.Conditions(false, false, true)),
			objects.Endpoint("10.244.1.5", objects.Conditions(false, false, false))),
		objects.Slice(testNS, "dns-v6", "dns", discovery.AddressTypeIPv6, dnsPorts, readyEP("fd00:10:244:1::2")),
		objects.Slice(testNS, "shared", "shared", discovery.AddressTypeIPv4,
			[]discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolUDP, 5353)}, readyEP("10.244.2.2")),
		objects.Slice(testNS, "web", "web", discovery.AddressTypeIPv4,
			[]discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolTCP, 8080)}, readyEP("10.244.1.7")),
	)
}

type flowCase struct {
	name  string
	flow  *netlink.ConntrackFlow
	stale bool
}

func checkFlows(t *testing.T, flt *Filter, cases []flowCase) {
	t.Helper()
	for _, c := range cases {
		if got := flt.MatchConntrackFlow(c.flow); got != c.stale {
			t.Errorf("%s: stale = %v, want %v", c.name, got, c.stale)
		}
	}
}

func TestFilterIPv4(t *testing.T) {
	p := dnsPlan(t, testConfig)
	// 192.168.0.5 is another local address, as CleanUDP would list it.
	flt := NewFilter(p, plan.IPv4, []netip.Addr{netip.MustParseAddr("192.168.0.5")})
	const client = "10.244.3.3:40000"
	checkFlows(t, flt, []flowCase{
		// ClusterIP.
		{"cluster IP to a ready endpoint", udp(client, "10.96.0.10:53", "10.244.1.2:5353"), false},
		{"cluster IP to a serving terminating endpoint", udp(client, "10.96.0.10:53", "10.244.1.3:5353"), false},
		{"cluster IP to a terminating endpoint that no longer serves", udp(client, "10.96.0.10:53", "10.244.1.4:5353"), true},
		{"cluster IP to a not ready endpoint", udp(client, "10.96.0.10:53", "10.244.1.5:5353"), true},
		{"cluster IP to a removed endpoint", udp(client, "10.96.0.10:53", "10.244.1.9:5353"), true},
		{"cluster IP to a serving endpoint address on another port", udp(client, "10.96.0.10:53", "10.244.1.2:53"), true},
		{"cluster IP to another Service's endpoint", udp(client, "10.96.0.10:53", "10.244.2.2:5353"), true},
		{"cluster IP without DNAT, Service has endpoints", udp(client, "10.96.0.10:53", "10.96.0.10:53"), true},
		{"cluster IP without DNAT, Service has none", udp(client, "10.96.0.20:53", "10.96.0.20:53"), true},
		{"cluster IP on a port the Service lacks", udp(client, "10.96.0.10:54", "10.96.0.10:54"), false},
		{"second Service, its endpoint", udp(client, "10.96.0.11:53", "10.244.2.2:5353"), false},
		{"second Service, the first one's endpoint", udp(client, "10.96.0.11:53", "10.244.1.2:5353"), true},
		{"IPv4 in 16 bytes", func() *netlink.ConntrackFlow {
			f := udp(client, "10.96.0.10:53", "10.244.1.9:5353")
			f.Forward.DstIP, f.Reverse.SrcIP = f.Forward.DstIP.To16(), f.Reverse.SrcIP.To16()
			return f
		}(), true},

		// External and load-balancer IPs; 203.0.113.10:53 belongs to two
		// Services, so the endpoints of both keep their flows there.
		{"external IP to a ready endpoint", udp("192.0.2.1:1000", "203.0.113.10:53", "10.244.1.2:5353"), false},
		{"external IP to the other Service's endpoint", udp("192.0.2.1:1000", "203.0.113.10:53", "10.244.2.2:5353"), false},
		{"external IP to a removed endpoint", udp("192.0.2.1:1000", "203.0.113.10:53", "10.244.1.9:5353"), true},
		{"external IP without DNAT", udp("192.0.2.1:1000", "203.0.113.10:53", "203.0.113.10:53"), true},
		{"load-balancer IP to a ready endpoint", udp("192.0.2.1:1000", "203.0.113.20:53", "10.244.1.3:5353"), false},
		{"load-balancer IP to a removed endpoint", udp("192.0.2.1:1000", "203.0.113.20:53", "10.244.1.9:5353"), true},
		{"load-balancer IP to the other Service's endpoint", udp("192.0.2.1:1000", "203.0.113.20:53", "10.244.2.2:5353"), true},

		// NodePorts: this node's addresses, listed or configured.
		{"node port to a ready endpoint", udp("192.0.2.1:1000", "198.51.100.1:30053", "10.244.1.2:5353"), false},
		{"node port to a removed endpoint", udp("192.0.2.1:1000", "198.51.100.1:30053", "10.244.1.9:5353"), true},
		{"node port to another Service's endpoint", udp("192.0.2.1:1000", "198.51.100.1:30053", "10.244.2.2:5353"), true},
		{"node port without DNAT", udp("192.0.2.1:1000", "198.51.100.1:30053", "198.51.100.1:30053"), true},
		{"node port on a listed local address", udp("192.0.2.1:1000", "192.168.0.5:30053", "10.244.1.9:5353"), true},
		{"node port number on a host that is not this node", udp(client, "192.0.2.7:30053", "192.0.2.7:30053"), false},
		{"node port number on loopback", udp("127.0.0.1:1000", "127.0.0.1:30053", "127.0.0.1:30053"), false},
		{"node port number on a ClusterIP", udp(client, "10.96.0.30:30053", "10.96.0.30:30053"), false},
		{"another port on a node address", udp("192.0.2.1:1000", "198.51.100.1:30055", "198.51.100.1:30055"), false},

		// Never stale.
		{"TCP to a removed endpoint", tcp(client, "10.96.0.10:53", "10.244.1.9:5353"), false},
		{"TCP without DNAT", tcp(client, "10.96.0.30:80", "10.96.0.30:80"), false},
		{"TCP node port to a removed endpoint", tcp("192.0.2.1:1000", "198.51.100.1:30054", "10.244.1.9:5353"), false},
		{"pod directly", udp(client, "10.244.1.4:5353", "10.244.1.4:5353"), false},
		{"outside the cluster", udp(client, "192.0.2.1:53", "192.0.2.1:53"), false},
		{"IPv6 flow", udp("[fd00:10:244:3::3]:40000", "[fd00:10:96::10]:53", "[fd00:10:244:1::9]:5353"), false},
		{"nil flow", nil, false},
	})
}

func TestFilterIPv6(t *testing.T) {
	p := dnsPlan(t, testConfig)
	flt := NewFilter(p, plan.IPv6, nil)
	const client = "[fd00:10:244:3::3]:40000"
	checkFlows(t, flt, []flowCase{
		{"cluster IP to a ready endpoint", udp(client, "[fd00:10:96::10]:53", "[fd00:10:244:1::2]:5353"), false},
		{"cluster IP to a removed endpoint", udp(client, "[fd00:10:96::10]:53", "[fd00:10:244:1::9]:5353"), true},
		{"cluster IP without DNAT", udp(client, "[fd00:10:96::10]:53", "[fd00:10:96::10]:53"), true},
		{"external IP to a removed endpoint", udp("[2001:db8::1]:1000", "[2001:db8:2::10]:53", "[fd00:10:244:1::9]:5353"), true},
		{"load-balancer IP to a ready endpoint", udp("[2001:db8::1]:1000", "[2001:db8:2::20]:53", "[fd00:10:244:1::2]:5353"), false},
		{"node port to a removed endpoint", udp("[2001:db8::1]:1000", "[2001:db8:1::1]:30053", "[fd00:10:244:1::9]:5353"), true},
		{"node port to a ready endpoint", udp("[2001:db8::1]:1000", "[2001:db8:1::1]:30053", "[fd00:10:244:1::2]:5353"), false},
		{"node port number on loopback", udp("[::1]:1000", "[::1]:30053", "[::1]:30053"), false},
		{"TCP to a removed endpoint", tcp(client, "[fd00:10:96::10]:53", "[fd00:10:244:1::9]:5353"), false},
		{"IPv4 flow", udp("10.244.3.3:40000", "10.96.0.10:53", "10.244.1.9:5353"), false},
	})
}

// TestFilterNodePortAddresses: with nodePortAddresses only the addresses in
// them accept NodePorts, whatever is local.
func TestFilterNodePortAddresses(t *testing.T) {
	cfg := testConfig
	cfg.NodePortAddresses = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	flt := NewFilter(dnsPlan(t, cfg), plan.IPv4, []netip.Addr{netip.MustParseAddr("192.168.0.5")})
	checkFlows(t, flt, []flowCase{
		{"node port on a node address in range", udp("192.0.2.1:1000", "198.51.100.1:30053", "10.244.1.9:5353"), true},
		{"node port on a local address out of range", udp("192.0.2.1:1000", "192.168.0.5:30053", "10.244.1.9:5353"), false},
		{"cluster IP still cleaned", udp("10.244.3.3:40000", "10.96.0.10:53", "10.244.1.9:5353"), true},
	})
}

// TestFilterUnknownNodeAddresses: knowing no node address, any address but
// loopback and Service addresses may be a NodePort destination.
func TestFilterUnknownNodeAddresses(t *testing.T) {
	cfg := testConfig
	cfg.NodeIPs = nil
	flt := NewFilter(dnsPlan(t, cfg), plan.IPv4, nil)
	checkFlows(t, flt, []flowCase{
		{"node port on any address", udp("192.0.2.1:1000", "192.0.2.7:30053", "10.244.1.9:5353"), true},
		{"node port to a ready endpoint", udp("192.0.2.1:1000", "192.0.2.7:30053", "10.244.1.2:5353"), false},
		{"node port number on loopback", udp("127.0.0.1:1000", "127.0.0.1:30053", "127.0.0.1:30053"), false},
		{"node port number on a ClusterIP", udp("10.244.3.3:40000", "10.96.0.30:30053", "10.96.0.30:30053"), false},
		{"node port number on an external IP", udp("192.0.2.1:1000", "203.0.113.10:30053", "203.0.113.10:30053"), false},
	})
}

// TestFilterLocalhostNodePorts: with localhost NodePorts (iptables mode),
// a stale flow to 127.0.0.1:<nodePort> is cleaned like one to a node IP.
func TestFilterLocalhostNodePorts(t *testing.T) {
	cfg := testConfig
	cfg.LocalhostNodePorts = true
	flt := NewFilter(dnsPlan(t, cfg), plan.IPv4, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("198.51.100.1")})
	checkFlows(t, flt, []flowCase{
		{"node port on loopback", udp("127.0.0.1:1000", "127.0.0.1:30053", "10.244.1.9:5353"), true},
		{"node port on a node address", udp("192.0.2.1:1000", "198.51.100.1:30053", "10.244.1.9:5353"), true},
	})
	cfg.LocalhostNodePorts = false
	flt = NewFilter(dnsPlan(t, cfg), plan.IPv4, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("198.51.100.1")})
	checkFlows(t, flt, []flowCase{
		{"without localhost NodePorts, loopback is no NodePort address", udp("127.0.0.1:1000", "127.0.0.1:30053", "10.244.1.9:5353"), false},
	})
}

func TestFilterEmpty(t *testing.T) {
	stale := udp("10.244.3.3:40000", "10.96.0.10:53", "10.244.1.9:5353")
	for name, flt := range map[string]*Filter{
		"zero":     {},
		"nil":      nil,
		"nil plan": NewFilter(nil, plan.IPv4, nil),
		"no ports": NewFilter(&plan.Plan{Ports: map[plan.Key]*plan.ServicePort{}}, plan.IPv4, nil),
	} {
		if flt.MatchConntrackFlow(stale) {
			t.Errorf("%s filter matched %v", name, stale)
		}
	}
}

// TestFilterRemovedPorts: after a UDP Service is deleted, every flow to its
// addresses is stale; an address another Service has taken over follows
// that Service.
func TestFilterRemovedPorts(t *testing.T) {
	p := dnsPlan(t, testConfig)
	gone := &plan.ServicePort{
		Key:       plan.Key{ServicePortName: plan.ServicePortName{Namespace: testNS, Name: "gone", Protocol: v1.ProtocolUDP}, Family: plan.IPv4},
		ClusterIP: netip.MustParseAddr("10.96.0.99"), Port: 53, NodePort: 30099,
	}
	taken := &plan.ServicePort{
		Key:       plan.Key{ServicePortName: plan.ServicePortName{Namespace: testNS, Name: "old-dns", Protocol: v1.ProtocolUDP}, Family: plan.IPv4},
		ClusterIP: netip.MustParseAddr("10.96.0.10"), Port: 53,
	}
	tcp6 := &plan.ServicePort{
		Key:       plan.Key{ServicePortName: plan.ServicePortName{Namespace: testNS, Name: "web", Protocol: v1.ProtocolTCP}, Family: plan.IPv4},
		ClusterIP: netip.MustParseAddr("10.96.0.98"), Port: 53,
	}
	flt := NewFilter(p, plan.IPv4, nil, gone, taken, tcp6)
	checkFlows(t, flt, []flowCase{
		{"removed Service's cluster IP, DNATed", udp("10.244.3.3:40000", "10.96.0.99:53", "10.244.1.2:5353"), true},
		{"removed Service's cluster IP, no DNAT", udp("10.244.3.3:40000", "10.96.0.99:53", "10.96.0.99:53"), true},
		{"removed Service's node port", udp("192.0.2.1:1000", "198.51.100.1:30099", "10.244.1.2:5353"), true},
		{"address taken over: its serving endpoint", udp("10.244.3.3:40000", "10.96.0.10:53", "10.244.1.2:5353"), false},
		{"removed TCP port: not UDP, nothing to do", udp("10.244.3.3:40000", "10.96.0.98:53", "10.244.1.2:5353"), false},
	})
	if NeedsClean(p, plan.Changes{Removed: map[plan.Key]*plan.ServicePort{gone.Key: gone}}, plan.IPv4) != true {
		t.Error("NeedsClean ignores a removed UDP port")
	}
}
