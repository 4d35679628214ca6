// Package addrplan is the one address plan of the networks svcproxy builds
// for itself: the tests' clusters (testkit/testnet), the lab, and the
// benchmarks. All of it lives inside the namespaces they create; nothing is
// configured in the machine's own. The node network and everything
// external (the outside client, LoadBalancer and external IPs) come from
// the documentation ranges (RFC 5737, RFC 3849), so they can never collide
// with a real network; pods and Services use the ranges kubeadm clusters
// commonly use.
//
//	node N        LANv4 .N, LANv6 ::N; pods PodCIDRv4 10.244.N.0/24 and
//	              fd00:10:244:N::/64, .1/::1 the gateway, .2/::2 onwards pods
//	client        Client (.100, ::100): the outside world, on the LAN
//	control plane ControlPlane (.250): the lab's apiserver
//	Services      ServiceCIDRv4, ServiceCIDRv6; KubernetesIP, DNSIP
//	external      ExternalPoolv4, ExternalPoolv6 (routed to the nodes)
package addrplan

import "net/netip"

var (
	// LANv4 and LANv6 are the node network, one bridge.
	LANv4 = netip.MustParsePrefix("198.51.100.0/24")
	LANv6 = netip.MustParsePrefix("2001:db8:1::/64")

	// ClientV4 and ClientV6 are the outside client's LAN addresses.
	ClientV4 = Nth(LANv4, 100)
	ClientV6 = Nth(LANv6, 0x100)

	// ControlPlane is the lab's control-plane host (IPv4 only).
	ControlPlane = Nth(LANv4, 250)

	// ClusterCIDRv4 and ClusterCIDRv6 hold every pod address.
	ClusterCIDRv4 = netip.MustParsePrefix("10.244.0.0/16")
	ClusterCIDRv6 = netip.MustParsePrefix("fd00:10:244::/56")

	// ServiceCIDRv4 and ServiceCIDRv6 hold the ClusterIPs. Nothing is
	// configured for them: only a proxy makes them reachable.
	ServiceCIDRv4 = netip.MustParsePrefix("10.96.0.0/16")
	ServiceCIDRv6 = netip.MustParsePrefix("fd00:10:96::/112")

	// KubernetesIP is the kubernetes Service's ClusterIP (the API server),
	// DNSIP kube-dns's.
	KubernetesIP = Nth(ServiceCIDRv4, 1)
	DNSIP        = Nth(ServiceCIDRv4, 10)

	// ExternalPoolv4 and ExternalPoolv6 are LoadBalancer and external IPs.
	// The client routes them to the nodes; no interface holds them.
	ExternalPoolv4 = netip.MustParsePrefix("203.0.113.0/24")
	ExternalPoolv6 = netip.MustParsePrefix("2001:db8:2::/64")
)

// MaxNodes is the most nodes the plan numbers: node N's pods are
// 10.244.N.0/24, and .100 of the LAN is the client's.
const MaxNodes = 99

// Node is where one node sits in the plan.
type Node struct {
	// LANv4 and LANv6 are the node IPs (a Node's InternalIPs).
	LANv4, LANv6 netip.Addr
	// PodCIDRv4 and PodCIDRv6 hold the node's pods.
	PodCIDRv4, PodCIDRv6 netip.Prefix
}

// NodeN returns node n's addresses, n from 1 to MaxNodes.
func NodeN(n int) Node {
	return Node{
		LANv4:     Nth(LANv4, n),
		LANv6:     Nth(LANv6, n),
		PodCIDRv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(n), 0}), 24),
		PodCIDRv6: netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x02, 0x44, 0, byte(n)}), 64),
	}
}

// IPs returns the node IPs, IPv4 first.
func (n Node) IPs() []netip.Addr { return []netip.Addr{n.LANv4, n.LANv6} }

// GatewayV4 and GatewayV6 are the node's addresses on every pod veth.
func (n Node) GatewayV4() netip.Addr { return Nth(n.PodCIDRv4, 1) }
func (n Node) GatewayV6() netip.Addr { return Nth(n.PodCIDRv6, 1) }

// Gateways returns GatewayV4 and GatewayV6.
func (n Node) Gateways() []netip.Addr { return []netip.Addr{n.GatewayV4(), n.GatewayV6()} }

// PodV4 and PodV6 are the addresses of the node's i-th pod (i from 0):
// the same host number in both pod CIDRs.
func (n Node) PodV4(i int) netip.Addr { return Nth(n.PodCIDRv4, i+2) }
func (n Node) PodV6(i int) netip.Addr { return Nth(n.PodCIDRv6, i+2) }

// Nth returns the n-th address of p counted from its base (n small).
func Nth(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}
