package testnet

import (
	"fmt"
	"net/netip"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// The address plan shared by every kernel test. All of it lives inside the
// namespaces a Cluster creates; nothing is configured in the machine's own
// namespace. External addresses come from the documentation ranges
// (RFC 5737, RFC 3849) so they can never collide with a real network.
var (
	// ClusterCIDRv4 and ClusterCIDRv6 hold every pod address.
	ClusterCIDRv4 = netip.MustParsePrefix("10.244.0.0/16")
	ClusterCIDRv6 = netip.MustParsePrefix("fd00:10:244::/56")

	// ServiceCIDRv4 and ServiceCIDRv6 are where tests pick ClusterIPs.
	// Nothing is configured for them: only a proxy makes them reachable.
	ServiceCIDRv4 = netip.MustParsePrefix("10.96.0.0/16")
	ServiceCIDRv6 = netip.MustParsePrefix("fd00:10:96::/112")

	// LANv4 and LANv6 are the node network: node1 .1/::1, node2 .2/::2 and
	// the external client .100/::100, all on one bridge.
	LANv4 = netip.MustParsePrefix("198.51.100.0/24")
	LANv6 = netip.MustParsePrefix("2001:db8:1::/64")

	// ExternalPoolv4 and ExternalPoolv6 are LoadBalancer and external IPs.
	// The external client routes them via node1; no interface has them.
	ExternalPoolv4 = netip.MustParsePrefix("203.0.113.0/24")
	ExternalPoolv6 = netip.MustParsePrefix("2001:db8:2::/64")

	// ExtIPv4 and ExtIPv6 are the external client's LAN addresses.
	ExtIPv4 = netip.MustParseAddr("198.51.100.100")
	ExtIPv6 = netip.MustParseAddr("2001:db8:1::100")

	Node1Addrs = NodeAddrs{
		Name:      "node1",
		LANv4:     netip.MustParseAddr("198.51.100.1"),
		LANv6:     netip.MustParseAddr("2001:db8:1::1"),
		PodCIDRv4: netip.MustParsePrefix("10.244.1.0/24"),
		PodCIDRv6: netip.MustParsePrefix("fd00:10:244:1::/64"),
	}
	Node2Addrs = NodeAddrs{
		Name:      "node2",
		LANv4:     netip.MustParseAddr("198.51.100.2"),
		LANv6:     netip.MustParseAddr("2001:db8:1::2"),
		PodCIDRv4: netip.MustParsePrefix("10.244.2.0/24"),
		PodCIDRv6: netip.MustParsePrefix("fd00:10:244:2::/64"),
	}
)

// NodeAddrs is where one node sits in the address plan.
type NodeAddrs struct {
	Name string
	// LANv4 and LANv6 are the node IPs (a Node's InternalIPs).
	LANv4, LANv6 netip.Addr
	// PodCIDRv4 and PodCIDRv6 hold the node's pods: .1/::1 is the
	// gateway, pods get .2/::2 onwards.
	PodCIDRv4, PodCIDRv6 netip.Prefix
}

// IPs returns the node IPs, IPv4 first.
func (a NodeAddrs) IPs() []netip.Addr { return []netip.Addr{a.LANv4, a.LANv6} }

// GatewayV4 is the node's address on every one of its pod veths.
func (a NodeAddrs) GatewayV4() netip.Addr { return nsrun.NthAddr(a.PodCIDRv4, 1) }

// GatewayV6 is the node's address on every one of its pod veths.
func (a NodeAddrs) GatewayV6() netip.Addr { return nsrun.NthAddr(a.PodCIDRv6, 1) }

// Gateways returns GatewayV4 and GatewayV6.
func (a NodeAddrs) Gateways() []netip.Addr { return []netip.Addr{a.GatewayV4(), a.GatewayV6()} }

// NodeAddrsOf returns the plan of "node1" or "node2".
func NodeAddrsOf(node string) (NodeAddrs, error) {
	switch node {
	case Node1Addrs.Name:
		return Node1Addrs, nil
	case Node2Addrs.Name:
		return Node2Addrs, nil
	}
	return NodeAddrs{}, fmt.Errorf("unknown node %q (want node1 or node2)", node)
}
