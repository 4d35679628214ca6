// Package flows is the one packet-flow table every dataplane is tested
// against.
//
// Fixture is a small cluster seen from one node (Services, EndpointSlices,
// the Node and the proxy's Config); Flows is a list of packets with the
// verdict each must get, written by hand from Kubernetes' Service semantics
// (DESIGN.md §3), not computed by the plan. The plan's tests check
// plan.Build(Fixture()).Decide against the table; a dataplane's tests render
// the same fixture, trace each flow's packet through what they rendered,
// turn the trace into a plan.Decision and call Check.
//
// The address plan:
//
//	this node  node1, zone-a   198.51.100.1, 2001:db8:1::1
//	other node node2, zone-b   198.51.100.2
//	pods       10.244.0.0/16, fd00:10:244::/56 (the cluster CIDRs)
//	  node1    10.244.1.2, 10.244.1.3, fd00:10:244:1::2, fd00:10:244:1::3
//	  node2    10.244.2.2, 10.244.2.3, fd00:10:244:2::2, fd00:10:244:2::3
//	ClusterIPs 10.96.0.0/16, fd00:10:96::/112
//	LB and external IPs 203.0.113.0/24, 2001:db8:2::/64
//	NodePorts  30000-32767
//	clients    198.51.100.100, 2001:db8:1::100 (inside the source ranges),
//	           192.0.2.50 (outside them)
package flows

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// Namespace holds every object of the fixture.
const Namespace = "flows"

// The nodes and the addresses flows start from.
const (
	NodeName  = "node1"
	Zone      = "zone-a"
	NodeIP    = "198.51.100.1"
	NodeIPv6  = "2001:db8:1::1"
	Node2Name = "node2"
	Zone2     = "zone-b"
	Node2IP   = "198.51.100.2"

	PodA   = "10.244.1.2" // on node1; an endpoint of several Services (hairpin)
	PodB   = "10.244.1.3" // on node1
	PodC   = "10.244.2.2" // on node2
	PodD   = "10.244.2.3" // on node2
	PodA6  = "fd00:10:244:1::2"
	PodB6  = "fd00:10:244:1::3"
	PodC6  = "fd00:10:244:2::2"
	PodD6  = "fd00:10:244:2::3"
	Client = "198.51.100.100" // external, inside every source range
	// Client6 is the IPv6 external client.
	Client6 = "2001:db8:1::100"
	Other   = "192.0.2.50" // external, outside every source range
)

// FixtureFor returns Fixture for a dataplane: the plan resolves the
// Services' schedulers against its capabilities (compare with FlowsFor).
func FixtureFor(caps plan.Capabilities) plan.Input {
	in := Fixture()
	in.Config.Dataplane = caps
	return in
}

// Fixture returns the cluster every flow runs against, seen from node1, for
// a dataplane that spreads connections at random only (see FixtureFor).
// Each call returns new objects, so callers may change them.
func Fixture() plan.Input {
	var (
		svcs   []*v1.Service
		slices []*discovery.EndpointSlice
	)
	add := func(s *v1.Service, sl ...*discovery.EndpointSlice) {
		svcs = append(svcs, s)
		slices = append(slices, sl...)
	}

	// ClusterIP Services.
	add(service("one", singleStack("10.96.0.10"), port("", v1.ProtocolTCP, 80, 0)),
		epSlice("one", v4, ports1(8080), endpoint(PodC, Node2Name)))
	add(service("three", singleStack("10.96.0.11"), port("", v1.ProtocolTCP, 80, 0)),
		epSlice("three", v4, ports1(8080), endpoint(PodA, NodeName), endpoint(PodC, Node2Name), endpoint(PodD, Node2Name)))

	// NodePort, externalTrafficPolicy Cluster.
	add(service("np-cluster", singleStack("10.96.0.12"), port("", v1.ProtocolTCP, 80, 30012)),
		epSlice("np-cluster", v4, ports1(8080), endpoint(PodB, NodeName), endpoint(PodD, Node2Name)))

	// NodePort + LoadBalancer, externalTrafficPolicy Local, with a local
	// endpoint.
	add(service("lb-local", singleStack("10.96.0.13"), port("", v1.ProtocolTCP, 80, 30013), lb("203.0.113.13"), objects.ExternalTrafficPolicyLocal(32013)),
		epSlice("lb-local", v4, ports1(8081), endpoint(PodA, NodeName), endpoint(PodC, Node2Name)))

	// NodePort, externalTrafficPolicy Local, remote endpoints only.
	add(service("np-local-remote", singleStack("10.96.0.14"), port("", v1.ProtocolTCP, 80, 30014), objects.ExternalTrafficPolicyLocal(32014)),
		epSlice("np-local-remote", v4, ports1(8082), endpoint(PodC, Node2Name), endpoint(PodD, Node2Name)))

	// internalTrafficPolicy Local, with and without a local endpoint.
	add(service("itp-local", singleStack("10.96.0.15"), port("", v1.ProtocolTCP, 80, 0), objects.InternalTrafficPolicyLocal()),
		epSlice("itp-local", v4, ports1(8083), endpoint(PodB, NodeName), endpoint(PodD, Node2Name)))
	add(service("itp-remote", singleStack("10.96.0.16"), port("", v1.ProtocolTCP, 80, 0), objects.InternalTrafficPolicyLocal()),
		epSlice("itp-remote", v4, ports1(8084), endpoint(PodC, Node2Name)))

	// sessionAffinity ClientIP, default and short timeouts.
	add(service("sticky", singleStack("10.96.0.17"), port("", v1.ProtocolTCP, 80, 30017), objects.Affinity(0)),
		epSlice("sticky", v4, ports1(8085), endpoint(PodA, NodeName), endpoint(PodC, Node2Name)))
	add(service("sticky-short", singleStack("10.96.0.18"), port("", v1.ProtocolTCP, 80, 0), objects.Affinity(600)),
		epSlice("sticky-short", v4, ports1(8086), endpoint(PodD, Node2Name)))

	// LoadBalancer with loadBalancerSourceRanges.
	add(service("lb-ranges", singleStack("10.96.0.19"), port("", v1.ProtocolTCP, 443, 30019), lb("203.0.113.19"), objects.SourceRanges("198.51.100.0/24")),
		epSlice("lb-ranges", v4, ports1(8443), endpoint(PodB, NodeName), endpoint(PodD, Node2Name)))

	// externalIPs, Cluster and Local.
	add(service("ext-ip", singleStack("10.96.0.20"), port("", v1.ProtocolTCP, 80, 0), objects.ExternalIPs("203.0.113.20")),
		epSlice("ext-ip", v4, ports1(8087), endpoint(PodC, Node2Name)))
	add(service("ext-ip-local", singleStack("10.96.0.21"), port("", v1.ProtocolTCP, 80, 0), objects.ExternalIPs("203.0.113.21"), objects.ExternalTrafficPolicyLocal(0)),
		epSlice("ext-ip-local", v4, ports1(8088), endpoint(PodA, NodeName), endpoint(PodD, Node2Name)))

	// No endpoints at all, on every kind of address.
	add(service("empty", singleStack("10.96.0.22"), port("", v1.ProtocolTCP, 80, 30022), lb("203.0.113.22"), objects.ExternalIPs("203.0.113.23")),
		epSlice("empty", v4, ports1(8080)))

	// UDP.
	add(service("udp", singleStack("10.96.0.23"), port("dns", v1.ProtocolUDP, 53, 0)),
		epSlice("udp", v4, []discovery.EndpointPort{objects.EndpointPort("dns", v1.ProtocolUDP, 5353)}, endpoint(PodB, NodeName), endpoint(PodD, Node2Name)))

	// Dual-stack NodePort + LoadBalancer.
	add(service("dual", dualStack("10.96.0.24", "fd00:10:96::24"), port("", v1.ProtocolTCP, 80, 30024), lb("203.0.113.24", "2001:db8:2::24")),
		epSlice("dual", v4, ports1(8089), endpoint(PodA, NodeName), endpoint(PodC, Node2Name)),
		epSlice("dual", v6, ports1(8089), endpoint(PodA6, NodeName), endpoint(PodC6, Node2Name)))

	// IPv6 single-stack NodePort, externalTrafficPolicy Local.
	add(service("v6-local", singleStack("fd00:10:96::26"), port("", v1.ProtocolTCP, 80, 30026), objects.ExternalTrafficPolicyLocal(32026)),
		epSlice("v6-local", v6, ports1(8090), endpoint(PodB6, NodeName), endpoint(PodD6, Node2Name)))

	// Terminating endpoints only: two serving, one not.
	add(service("terminating", singleStack("10.96.0.27"), port("", v1.ProtocolTCP, 80, 30027), objects.ExternalTrafficPolicyLocal(32027)),
		epSlice("terminating", v4, ports1(8091),
			endpoint(PodB, NodeName, terminating(true)), endpoint(PodC, Node2Name, terminating(true)), endpoint(PodD, Node2Name, terminating(false))))

	// Multi-port.
	add(service("multi", singleStack("10.96.0.28"), port("http", v1.ProtocolTCP, 80, 0), port("metrics", v1.ProtocolTCP, 9090, 0), port("syslog", v1.ProtocolUDP, 514, 0)),
		epSlice("multi", v4, []discovery.EndpointPort{
			objects.EndpointPort("http", v1.ProtocolTCP, 8092),
			objects.EndpointPort("metrics", v1.ProtocolTCP, 9100),
			objects.EndpointPort("syslog", v1.ProtocolUDP, 5514),
		}, endpoint(PodB, NodeName), endpoint(PodC, Node2Name)))

	// SCTP, ClusterIP and NodePort.
	add(service("sctp", singleStack("10.96.0.30"), port("", v1.ProtocolSCTP, 9999, 30030)),
		epSlice("sctp", v4, []discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolSCTP, 9999)}, endpoint(PodC, Node2Name)))

	// Topology-aware routing: zone hints, one node2 endpoint lent to zone-a.
	add(service("zonal", singleStack("10.96.0.29"), port("", v1.ProtocolTCP, 80, 0), func(s *v1.Service) {
		s.Spec.TrafficDistribution = objects.Ptr(v1.ServiceTrafficDistributionPreferSameZone)
	}),
		epSlice("zonal", v4, ports1(8093),
			endpoint(PodA, NodeName, objects.HintZones(Zone)),
			endpoint(PodC, Node2Name, objects.HintZones(Zone2)),
			endpoint(PodD, Node2Name, objects.HintZones(Zone))))

	// Schedulers chosen by annotation: round robin (with a NodePort, and
	// with affinity), source hashing (dual-stack), and least connection,
	// which nftables cannot express.
	sched := func(name string) objects.ServiceOption { return objects.Annotation(plan.AnnotationScheduler, name) }
	add(service("round-robin", singleStack("10.96.0.31"), port("", v1.ProtocolTCP, 80, 30031), sched("rr")),
		epSlice("round-robin", v4, ports1(8094), endpoint(PodA, NodeName), endpoint(PodC, Node2Name), endpoint(PodD, Node2Name)))
	add(service("source-hash", dualStack("10.96.0.32", "fd00:10:96::32"), port("", v1.ProtocolTCP, 80, 0), sched("sh")),
		epSlice("source-hash", v4, ports1(8095), endpoint(PodB, NodeName), endpoint(PodC, Node2Name)),
		epSlice("source-hash", v6, ports1(8095), endpoint(PodB6, NodeName), endpoint(PodC6, Node2Name)))
	add(service("least-conn", singleStack("10.96.0.33"), port("", v1.ProtocolTCP, 80, 0), sched("lc")),
		epSlice("least-conn", v4, ports1(8096), endpoint(PodC, Node2Name), endpoint(PodD, Node2Name)))
	add(service("sticky-rr", singleStack("10.96.0.34"), port("", v1.ProtocolTCP, 80, 0), sched("rr"), objects.Affinity(600)),
		epSlice("sticky-rr", v4, ports1(8097), endpoint(PodA, NodeName), endpoint(PodC, Node2Name)))

	return plan.Input{
		Services: svcs,
		Slices:   slices,
		Node:     node(),
		Config: plan.Config{
			NodeName: NodeName,
			ClusterCIDRs: []netip.Prefix{
				netip.MustParsePrefix("10.244.0.0/16"),
				netip.MustParsePrefix("fd00:10:244::/56"),
			},
			NodeIPs: []netip.Addr{netip.MustParseAddr(NodeIP), netip.MustParseAddr(NodeIPv6)},
		},
	}
}

// node is node1 as the kubelet registers it: hostname and zone labels, its
// pod CIDRs and its addresses.
func node() *v1.Node {
	n := objects.Node(NodeName, Zone)
	n.Labels[v1.LabelHostname] = NodeName
	n.Spec.PodCIDRs = []string{"10.244.1.0/24", "fd00:10:244:1::/64"}
	n.Status.Addresses = []v1.NodeAddress{
		{Type: v1.NodeInternalIP, Address: NodeIP},
		{Type: v1.NodeInternalIP, Address: NodeIPv6},
	}
	return n
}

// Builders for the fixture's objects, shaped as the API server and the
// EndpointSlice controller write them.

const (
	v4 = discovery.AddressTypeIPv4
	v6 = discovery.AddressTypeIPv6
)

// service is a ClusterIP Service with the fields the API server defaults: a
// selector, sessionAffinity None and internalTrafficPolicy Cluster.
func service(name string, opts ...objects.ServiceOption) *v1.Service {
	return objects.Service(Namespace, name, append([]objects.ServiceOption{
		func(s *v1.Service) {
			s.Spec.Selector = map[string]string{"app": name}
			s.Spec.SessionAffinity = v1.ServiceAffinityNone
		},
		objects.InternalTrafficPolicyCluster(),
	}, opts...)...)
}

// singleStack and dualStack set the ClusterIPs with their families and
// policy.
func singleStack(ip string) objects.ServiceOption {
	return clusterIPs(v1.IPFamilyPolicySingleStack, ip)
}

func dualStack(ip4, ip6 string) objects.ServiceOption {
	return clusterIPs(v1.IPFamilyPolicyRequireDualStack, ip4, ip6)
}

func clusterIPs(policy v1.IPFamilyPolicy, ips ...string) objects.ServiceOption {
	return func(s *v1.Service) {
		objects.ClusterIPs(ips...)(s)
		objects.IPFamilies(policy)(s)
	}
}

// port adds a Service port; a nodePort makes the Service a NodePort one
// (unless it is a LoadBalancer) with externalTrafficPolicy Cluster.
func port(name string, proto v1.Protocol, p, nodePort int32) objects.ServiceOption {
	return func(s *v1.Service) {
		objects.Port(name, proto, p, nodePort)(s)
		if nodePort != 0 {
			if s.Spec.Type == v1.ServiceTypeClusterIP {
				s.Spec.Type = v1.ServiceTypeNodePort
			}
			if s.Spec.ExternalTrafficPolicy == "" {
				objects.ExternalTrafficPolicyCluster()(s)
			}
		}
	}
}

// lb makes the Service a LoadBalancer with these ingress IPs (ipMode VIP).
func lb(ips ...string) objects.ServiceOption {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		for _, ip := range ips {
			objects.LoadBalancerIngress(ip, v1.LoadBalancerIPModeVIP)(s)
		}
	}
}

// epSlice is the EndpointSlice of a Service for one address type.
func epSlice(svcName string, at discovery.AddressType, ports []discovery.EndpointPort, eps ...discovery.Endpoint) *discovery.EndpointSlice {
	suffix := "-v4"
	if at == v6 {
		suffix = "-v6"
	}
	s := objects.Slice(Namespace, svcName+suffix, svcName, at, ports, eps...)
	s.Labels[discovery.LabelManagedBy] = "endpointslice-controller.k8s.io"
	return s
}

// ports1 is the single unnamed TCP port of an EndpointSlice.
func ports1(p int32) []discovery.EndpointPort {
	return []discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolTCP, p)}
}

// endpoint is a ready endpoint on a node, in the node's zone.
func endpoint(ip, node string, opts ...objects.EndpointOption) discovery.Endpoint {
	zone := Zone
	if node != NodeName {
		zone = Zone2
	}
	return objects.Endpoint(ip, append([]objects.EndpointOption{
		objects.Conditions(true, true, false), objects.OnNode(node), objects.InZone(zone),
	}, opts...)...)
}

// terminating marks an endpoint terminating, still serving or not.
func terminating(serving bool) objects.EndpointOption {
	return objects.Conditions(false, serving, true)
}
