package testnet

import (
	"fmt"

	"github.com/svcproxy/svcproxy/internal/addrplan"
)

// The address plan of every kernel test: package addrplan's, the lab's
// too. All of it lives inside the namespaces a Cluster creates; nothing is
// configured in the machine's own namespace.
var (
	ClusterCIDRv4, ClusterCIDRv6   = addrplan.ClusterCIDRv4, addrplan.ClusterCIDRv6
	ServiceCIDRv4, ServiceCIDRv6   = addrplan.ServiceCIDRv4, addrplan.ServiceCIDRv6
	LANv4, LANv6                   = addrplan.LANv4, addrplan.LANv6
	ExternalPoolv4, ExternalPoolv6 = addrplan.ExternalPoolv4, addrplan.ExternalPoolv6

	// ExtIPv4 and ExtIPv6 are the external client's LAN addresses; it
	// routes the external pools via node1.
	ExtIPv4, ExtIPv6 = addrplan.ClientV4, addrplan.ClientV6

	Node1Addrs = NodeAddrs{Name: "node1", Node: addrplan.NodeN(1)}
	Node2Addrs = NodeAddrs{Name: "node2", Node: addrplan.NodeN(2)}
)

// NodeAddrs is where one node sits in the address plan.
type NodeAddrs struct {
	Name string
	addrplan.Node
}

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
