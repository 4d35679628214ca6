package plan

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// decideObjects is the cluster the Decide tests run against: a Service per
// situation, each with its own ClusterIP 10.96.0.N and, where it has them,
// NodePort 300NN, external IP 203.0.113.N and load-balancer IP 203.0.113.1NN.
// node1 (this node) runs 10.244.1.2; node2 runs 10.244.2.2.
func decideObjects() ([]*v1.Service, []*discovery.EndpointSlice) {
	both := []discovery.Endpoint{
		objects.Endpoint("10.244.1.2", objects.OnNode("node1")),
		objects.Endpoint("10.244.2.2", objects.OnNode("node2")),
	}
	remote := []discovery.Endpoint{objects.Endpoint("10.244.2.2", objects.OnNode("node2"))}
	services := []*v1.Service{
		svc("c1", objects.ClusterIPs("10.96.0.1")),
		svc("none", objects.ClusterIPs("10.96.0.2"),
			objects.LoadBalancerIngress("203.0.113.102", ""), objects.NodePort(30002), objects.ExternalIPs("203.0.113.2")),
		svc("itp", objects.ClusterIPs("10.96.0.3"), objects.InternalTrafficPolicyLocal()),
		svc("itp-remote", objects.ClusterIPs("10.96.0.4"), objects.InternalTrafficPolicyLocal()),
		svc("etp", objects.ClusterIPs("10.96.0.5"),
			objects.LoadBalancerIngress("203.0.113.105", ""), objects.NodePort(30005), objects.ExternalIPs("203.0.113.5"), objects.ExternalTrafficPolicyLocal(0)),
		svc("etp-remote", objects.ClusterIPs("10.96.0.6"),
			objects.LoadBalancerIngress("203.0.113.106", ""), objects.NodePort(30006), objects.ExternalIPs("203.0.113.6"), objects.ExternalTrafficPolicyLocal(0)),
		svc("ext", objects.ClusterIPs("10.96.0.7"),
			objects.LoadBalancerIngress("203.0.113.107", ""), objects.NodePort(30007), objects.ExternalIPs("203.0.113.7"),
			objects.SourceRanges("198.51.100.0/24", "2001:db8:1::/48")),
		svc("sticky", objects.ClusterIPs("10.96.0.8"), objects.Affinity(0), objects.NodePort(30008)),
		svc("sticky-short", objects.ClusterIPs("10.96.0.9"), objects.Affinity(600)),
		svc("udp", objects.ClusterIPs("10.96.0.10"), ports(objects.Port("dns", v1.ProtocolUDP, 53, 0))),
		svc("v6", objects.ClusterIPs("fd00:10:96::11"), objects.NodePort(30011)),
		svc("etp-ranges", objects.ClusterIPs("10.96.0.12"),
			objects.LoadBalancerIngress("203.0.113.112", ""), objects.ExternalTrafficPolicyLocal(0), objects.SourceRanges("192.0.2.0/24")),
		svc("itp-none", objects.ClusterIPs("10.96.0.13"), objects.InternalTrafficPolicyLocal()),
		svc("term", objects.ClusterIPs("10.96.0.14"), objects.NodePort(30014), objects.ExternalTrafficPolicyLocal(0)),
	}
	slices := []*discovery.EndpointSlice{
		slice("c1-1", "c1", v4, tcp(8080), both...),
		slice("none-1", "none", v4, tcp(8080)),
		slice("itp-1", "itp", v4, tcp(8080), both...),
		slice("itp-remote-1", "itp-remote", v4, tcp(8080), remote...),
		slice("etp-1", "etp", v4, tcp(8080), both...),
		slice("etp-remote-1", "etp-remote", v4, tcp(8080), remote...),
		slice("ext-1", "ext", v4, tcp(8080), both...),
		slice("sticky-1", "sticky", v4, tcp(8080), both...),
		slice("sticky-short-1", "sticky-short", v4, tcp(8080), remote...),
		slice("udp-1", "udp", v4, []discovery.EndpointPort{objects.EndpointPort("dns", v1.ProtocolUDP, 5353)}, both...),
		slice("v6-1", "v6", v6, tcp(8080),
			objects.Endpoint("fd00:10:244:1::2", objects.OnNode("node1")), objects.Endpoint("fd00:10:244:2::2", objects.OnNode("node2"))),
		slice("etp-ranges-1", "etp-ranges", v4, tcp(8080), both...),
		slice("term-1", "term", v4, tcp(8080),
			objects.Endpoint("10.244.1.2", objects.OnNode("node1"), termServing()),
			objects.Endpoint("10.244.2.2", objects.OnNode("node2"), termServing()),
			objects.Endpoint("10.244.2.3", objects.OnNode("node2"), notReady())),
	}
	return services, slices
}

const (
	pod1     = "10.244.1.3" // a pod on this node
	hairpin  = "10.244.1.2" // a pod on this node that is itself an endpoint
	pod2     = "10.244.2.3" // a pod on node2, reaching this node's addresses
	host     = "198.51.100.1"
	client   = "198.51.100.100" // external, inside the allowed source range
	outsider = "192.0.2.50"     // external, outside it
)

// targets parses "10.244.1.2:8080" (not masqueraded) and
// "10.244.1.2:8080+masq" (masqueraded).
func targets(ss ...string) []Target {
	var out []Target
	for _, s := range ss {
		ap, masq := strings.CutSuffix(s, "+masq")
		out = append(out, Target{Endpoint: netip.MustParseAddrPort(ap), Masquerade: masq})
	}
	return out
}

func pkt(src, dst string, proto v1.Protocol) Packet {
	return Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddrPort(dst), Protocol: proto}
}

func fromHost(dst string) Packet {
	p := pkt(host, dst, v1.ProtocolTCP)
	p.FromHost = true
	return p
}

// TestDecide covers DESIGN §3's verdicts: reject and drop, masquerade,
// hairpin, Local policies for pods, the host and outside clients, affinity,
// source ranges, undefined ports, NodePort addresses and Pass.
func TestDecide(t *testing.T) {
	tcpP := func(src, dst string) Packet { return pkt(src, dst, v1.ProtocolTCP) }
	fwd := func(ts ...string) Decision { return Decision{Action: Forward, Targets: targets(ts...)} }
	sticky := func(sec int32, d Decision) Decision { d.AffinitySeconds = sec; return d }
	reject := Decision{Action: Reject}
	drop := Decision{Action: Drop}
	pass := Decision{Action: Pass}

	tests := []struct {
		name string
		cfg  func(*Config)
		pkt  Packet
		want Decision
		svc  string // the Service the decision names; "" for none
	}{
		// ClusterIP, masquerade.
		{name: "pod to ClusterIP: no masquerade", pkt: tcpP(pod1, "10.96.0.1:80"), svc: "c1",
			want: fwd("10.244.1.2:8080", "10.244.2.2:8080")},
		{name: "remote pod to ClusterIP: no masquerade", pkt: tcpP(pod2, "10.96.0.1:80"), svc: "c1",
			want: fwd("10.244.1.2:8080", "10.244.2.2:8080")},
		{name: "outside client to ClusterIP: masquerade", pkt: tcpP(client, "10.96.0.1:80"), svc: "c1",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "host to ClusterIP: masquerade", pkt: fromHost("10.96.0.1:80"), svc: "c1",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "masqueradeAll: pod to ClusterIP masqueraded", cfg: func(c *Config) { c.MasqueradeAll = true },
			pkt: tcpP(pod1, "10.96.0.1:80"), svc: "c1", want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "no cluster CIDRs: outside client to ClusterIP not masqueraded", cfg: func(c *Config) { c.ClusterCIDRs = nil },
			pkt: tcpP(client, "10.96.0.1:80"), svc: "c1", want: fwd("10.244.1.2:8080", "10.244.2.2:8080")},
		{name: "no cluster CIDR of the family: not masqueraded",
			cfg: func(c *Config) { c.ClusterCIDRs = prefixes("fd00:10:244::/56") },
			pkt: tcpP(client, "10.96.0.1:80"), svc: "c1", want: fwd("10.244.1.2:8080", "10.244.2.2:8080")},
		{name: "no cluster CIDRs, masqueradeAll", cfg: func(c *Config) { c.ClusterCIDRs, c.MasqueradeAll = nil, true },
			pkt: tcpP(pod1, "10.96.0.1:80"), svc: "c1", want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "hairpin to ClusterIP: only the pod itself masqueraded", pkt: tcpP(hairpin, "10.96.0.1:80"), svc: "c1",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080")},

		// No endpoints: reject, on every address.
		{name: "no endpoints: ClusterIP rejected", pkt: tcpP(pod1, "10.96.0.2:80"), svc: "none", want: reject},
		{name: "no endpoints: NodePort rejected", pkt: tcpP(client, host+":30002"), svc: "none", want: reject},
		{name: "no endpoints: external IP rejected", pkt: tcpP(client, "203.0.113.2:80"), svc: "none", want: reject},
		{name: "no endpoints: LB IP rejected", pkt: tcpP(client, "203.0.113.102:80"), svc: "none", want: reject},
		{name: "no endpoints: host to NodePort rejected", pkt: fromHost(host + ":30002"), svc: "none", want: reject},
		{name: "no endpoints and Local policy: rejected, not dropped", pkt: tcpP(pod1, "10.96.0.13:80"), svc: "itp-none", want: reject},

		// internalTrafficPolicy Local.
		{name: "itp Local: local endpoints only", pkt: tcpP(pod1, "10.96.0.3:80"), svc: "itp", want: fwd("10.244.1.2:8080")},
		{name: "itp Local from the host: local endpoints, masqueraded", pkt: fromHost("10.96.0.3:80"), svc: "itp", want: fwd("10.244.1.2:8080+masq")},
		{name: "itp Local without local endpoints: pod dropped", pkt: tcpP(pod1, "10.96.0.4:80"), svc: "itp-remote", want: drop},
		{name: "itp Local without local endpoints: host dropped", pkt: fromHost("10.96.0.4:80"), svc: "itp-remote", want: drop},

		// externalTrafficPolicy Local with a local endpoint.
		{name: "etp Local: outside client to NodePort keeps its IP", pkt: tcpP(client, host+":30005"), svc: "etp", want: fwd("10.244.1.2:8080")},
		{name: "etp Local: outside client to LB IP", pkt: tcpP(outsider, "203.0.113.105:80"), svc: "etp", want: fwd("10.244.1.2:8080")},
		{name: "etp Local: outside client to external IP", pkt: tcpP(client, "203.0.113.5:80"), svc: "etp", want: fwd("10.244.1.2:8080")},
		{name: "etp Local: pod to NodePort uses cluster endpoints", pkt: tcpP(pod1, host+":30005"), svc: "etp",
			want: fwd("10.244.1.2:8080", "10.244.2.2:8080")},
		{name: "etp Local: hairpin pod to LB IP", pkt: tcpP(hairpin, "203.0.113.105:80"), svc: "etp",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080")},
		{name: "etp Local: host to LB IP uses cluster endpoints, masqueraded", pkt: fromHost("203.0.113.105:80"), svc: "etp",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "etp Local: ClusterIP is internal traffic", pkt: tcpP(pod1, "10.96.0.5:80"), svc: "etp",
			want: fwd("10.244.1.2:8080", "10.244.2.2:8080")},

		// externalTrafficPolicy Local without a local endpoint.
		{name: "etp Local, remote only: outside client to NodePort dropped", pkt: tcpP(client, host+":30006"), svc: "etp-remote", want: drop},
		{name: "etp Local, remote only: outside client to LB IP dropped", pkt: tcpP(client, "203.0.113.106:80"), svc: "etp-remote", want: drop},
		{name: "etp Local, remote only: outside client to external IP dropped", pkt: tcpP(client, "203.0.113.6:80"), svc: "etp-remote", want: drop},
		{name: "etp Local, remote only: pod to NodePort uses cluster endpoints", pkt: tcpP(pod1, host+":30006"), svc: "etp-remote",
			want: fwd("10.244.2.2:8080")},
		{name: "etp Local, remote only: pod to external IP uses cluster endpoints", pkt: tcpP(pod1, "203.0.113.6:80"), svc: "etp-remote",
			want: fwd("10.244.2.2:8080")},
		{name: "etp Local, remote only: host to NodePort, masqueraded", pkt: fromHost(host + ":30006"), svc: "etp-remote",
			want: fwd("10.244.2.2:8080+masq")},
		{name: "etp Local, remote only: host to external IP, masqueraded", pkt: fromHost("203.0.113.6:80"), svc: "etp-remote",
			want: fwd("10.244.2.2:8080+masq")},
		{name: "etp Local, remote only, no cluster CIDRs: pod looks external, dropped",
			cfg: func(c *Config) { c.ClusterCIDRs = nil }, pkt: tcpP(pod1, host+":30006"), svc: "etp-remote", want: drop},
		{name: "etp Local, terminating endpoints: local serving+terminating one", pkt: tcpP(client, host+":30014"), svc: "term",
			want: fwd("10.244.1.2:8080")},
		{name: "terminating endpoints: ClusterIP uses serving+terminating ones", pkt: tcpP(pod1, "10.96.0.14:80"), svc: "term",
			want: fwd("10.244.1.2:8080", "10.244.2.2:8080")},

		// externalTrafficPolicy Cluster: external traffic always masqueraded.
		{name: "etp Cluster: outside client to NodePort masqueraded", pkt: tcpP(client, host+":30007"), svc: "ext",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "etp Cluster: pod to external IP masqueraded", pkt: tcpP(pod1, "203.0.113.7:80"), svc: "ext",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "etp Cluster: host to NodePort masqueraded", pkt: fromHost(host + ":30007"), svc: "ext",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "etp Cluster, no cluster CIDRs: external still masqueraded", cfg: func(c *Config) { c.ClusterCIDRs = nil },
			pkt: tcpP(client, "203.0.113.7:80"), svc: "ext", want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},

		// loadBalancerSourceRanges.
		{name: "source ranges: allowed client to LB IP", pkt: tcpP(client, "203.0.113.107:80"), svc: "ext",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "source ranges: blocked client to LB IP dropped", pkt: tcpP(outsider, "203.0.113.107:80"), svc: "ext", want: drop},
		{name: "source ranges: pod to LB IP outside the ranges dropped", pkt: tcpP(pod1, "203.0.113.107:80"), svc: "ext", want: drop},
		{name: "source ranges do not filter the NodePort", pkt: tcpP(outsider, host+":30007"), svc: "ext",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "source ranges do not filter external IPs", pkt: tcpP(outsider, "203.0.113.7:80"), svc: "ext",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "source ranges do not filter the ClusterIP", pkt: tcpP(outsider, "10.96.0.7:80"), svc: "ext",
			want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "source ranges before no-endpoints reject", pkt: tcpP(outsider, "203.0.113.102:80"), svc: "none", want: reject},
		{name: "source ranges with etp Local: allowed client keeps its IP", pkt: tcpP(outsider, "203.0.113.112:80"), svc: "etp-ranges",
			want: fwd("10.244.1.2:8080")},
		{name: "source ranges with etp Local: blocked client dropped", pkt: tcpP(client, "203.0.113.112:80"), svc: "etp-ranges", want: drop},

		// Affinity.
		{name: "affinity default timeout", pkt: tcpP(pod1, "10.96.0.8:80"), svc: "sticky",
			want: sticky(10800, fwd("10.244.1.2:8080", "10.244.2.2:8080"))},
		{name: "affinity on the NodePort too", pkt: tcpP(client, host+":30008"), svc: "sticky",
			want: sticky(10800, fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq"))},
		{name: "affinity custom timeout", pkt: tcpP(pod1, "10.96.0.9:80"), svc: "sticky-short",
			want: sticky(600, fwd("10.244.2.2:8080"))},
		{name: "no affinity", pkt: tcpP(pod1, "10.96.0.1:80"), svc: "c1", want: fwd("10.244.1.2:8080", "10.244.2.2:8080")},

		// Protocols and families.
		{name: "UDP", pkt: pkt(pod1, "10.96.0.10:53", v1.ProtocolUDP), svc: "udp", want: fwd("10.244.1.2:5353", "10.244.2.2:5353")},
		{name: "TCP to a UDP-only port: rejected", pkt: tcpP(pod1, "10.96.0.10:53"), want: reject},
		{name: "IPv6 pod to ClusterIP", pkt: tcpP("fd00:10:244:1::3", "[fd00:10:96::11]:80"), svc: "v6",
			want: fwd("[fd00:10:244:1::2]:8080", "[fd00:10:244:2::2]:8080")},
		{name: "IPv6 outside client to ClusterIP: masqueraded", pkt: tcpP("2001:db8:1::100", "[fd00:10:96::11]:80"), svc: "v6",
			want: fwd("[fd00:10:244:1::2]:8080+masq", "[fd00:10:244:2::2]:8080+masq")},
		{name: "IPv6 NodePort", pkt: tcpP("2001:db8:1::100", "[2001:db8:1::1]:30011"), svc: "v6",
			want: fwd("[fd00:10:244:1::2]:8080+masq", "[fd00:10:244:2::2]:8080+masq")},
		{name: "IPv6-only Service: no NodePort on IPv4", pkt: tcpP(client, host+":30011"), want: pass},

		// Undefined ports and unknown addresses.
		{name: "ClusterIP, undefined port: rejected", pkt: tcpP(pod1, "10.96.0.1:81"), want: reject},
		{name: "ClusterIP, undefined protocol: rejected", pkt: pkt(pod1, "10.96.0.1:80", v1.ProtocolUDP), want: reject},
		{name: "IPv6 ClusterIP, undefined port: rejected", pkt: tcpP("fd00:10:244:1::3", "[fd00:10:96::11]:81"), want: reject},
		{name: "ClusterIP on a NodePort number: rejected", pkt: tcpP(pod1, "10.96.0.7:30007"), want: reject},
		{name: "unallocated ClusterIP: pass", pkt: tcpP(pod1, "10.96.0.250:80"), want: pass},
		{name: "pod to pod: pass", pkt: tcpP(pod1, "10.244.2.2:8080"), want: pass},
		{name: "internet: pass", pkt: pkt(pod1, "8.8.8.8:53", v1.ProtocolUDP), want: pass},
		{name: "external IP, undefined port: pass", pkt: tcpP(client, "203.0.113.7:81"), want: pass},
		{name: "node IP, no such NodePort: pass", pkt: tcpP(client, host+":30999"), want: pass},

		// NodePort addresses.
		{name: "NodePort on another node's IP: pass", pkt: tcpP(client, "198.51.100.2:30007"), want: pass},
		{name: "NodePort on loopback: never by default", pkt: fromHost("127.0.0.1:30007"), want: pass},
		{name: "NodePort on loopback, even when a node IP", cfg: func(c *Config) { c.NodeIPs = append(c.NodeIPs, netip.MustParseAddr("127.0.0.1")) },
			pkt: fromHost("127.0.0.1:30007"), want: pass},
		{name: "NodePort on loopback: not from nodePortAddresses alone (kube-proxy skips it)",
			cfg: func(c *Config) { c.NodePortAddresses = prefixes("127.0.0.0/8", "198.51.100.0/24") },
			pkt: fromHost("127.0.0.1:30007"), want: pass},
		{name: "localhost NodePorts: 127.0.0.1 accepts",
			cfg: func(c *Config) { c.LocalhostNodePorts = true },
			pkt: fromHost("127.0.0.1:30007"), svc: "ext", want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "localhost NodePorts: all of 127.0.0.0/8 is local",
			cfg: func(c *Config) { c.LocalhostNodePorts = true },
			pkt: fromHost("127.0.0.2:30007"), svc: "ext", want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "localhost NodePorts: listed 127.0.0.0/8 accepts 127.0.0.1",
			cfg: func(c *Config) {
				c.LocalhostNodePorts = true
				c.NodePortAddresses = prefixes("127.0.0.0/8")
			},
			pkt: fromHost("127.0.0.1:30007"), svc: "ext", want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "localhost NodePorts: not when nodePortAddresses leaves loopback out",
			cfg: func(c *Config) {
				c.LocalhostNodePorts = true
				c.NodePortAddresses = prefixes("198.51.100.0/24")
			},
			pkt: fromHost("127.0.0.1:30007"), want: pass},
		{name: "localhost NodePorts: never on IPv6",
			cfg: func(c *Config) { c.LocalhostNodePorts = true },
			pkt: tcpP("::1", "[::1]:30011"), want: pass},
		{name: "nodePortAddresses: listed address accepts", cfg: func(c *Config) { c.NodePortAddresses = prefixes("198.51.100.1/32") },
			pkt: tcpP(client, host+":30007"), svc: "ext", want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "nodePortAddresses: unlisted node address refuses",
			cfg: func(c *Config) {
				c.NodeIPs = append(c.NodeIPs, netip.MustParseAddr("198.51.100.3"))
				c.NodePortAddresses = prefixes("198.51.100.3/32")
			},
			pkt: tcpP(client, host+":30007"), want: pass},
		{name: "nodePortAddresses: a family without prefixes accepts on every address, as kube-proxy",
			cfg: func(c *Config) { c.NodePortAddresses = prefixes("198.51.100.0/24") },
			pkt: tcpP("2001:db8:1::100", "[2001:db8:1::1]:30011"), svc: "v6",
			want: fwd("[fd00:10:244:1::2]:8080+masq", "[fd00:10:244:2::2]:8080+masq")},
		{name: "nodePortAddresses: a family's prefixes restrict it",
			cfg: func(c *Config) { c.NodePortAddresses = prefixes("198.51.100.0/24", "2001:db8:9::/64") },
			pkt: tcpP("2001:db8:1::100", "[2001:db8:1::1]:30011"), want: pass},
		{name: "nodePortAddresses: a /0 accepts every address of its family",
			cfg: func(c *Config) { c.NodePortAddresses = prefixes("0.0.0.0/0", "2001:db8:9::/64") },
			pkt: tcpP(client, host+":30007"), svc: "ext", want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
		{name: "nodePortAddresses: does not restrict external IPs", cfg: func(c *Config) { c.NodePortAddresses = prefixes("192.168.0.0/16") },
			pkt: tcpP(client, "203.0.113.7:80"), svc: "ext", want: fwd("10.244.1.2:8080+masq", "10.244.2.2:8080+masq")},
	}
	services, slices := decideObjects()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig
			cfg.ClusterCIDRs = append([]netip.Prefix(nil), testConfig.ClusterCIDRs...)
			cfg.NodeIPs = append([]netip.Addr(nil), testConfig.NodeIPs...)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			p, errs := Build(Input{Services: services, Slices: slices, Node: testNode("zone-a"), Config: cfg})
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			got := p.Decide(tt.pkt)
			if got.Reason == "" {
				t.Errorf("no reason given")
			}
			if got.Service.Name != tt.svc {
				t.Errorf("service %q, want %q", got.Service.Name, tt.svc)
			}
			got.Reason, got.Service = "", Key{}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%+v:\n got  %+v\n want %+v", tt.pkt, got, tt.want)
			}
		})
	}
}
