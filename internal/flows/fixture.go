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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/plan"
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

// Fixture returns the cluster every flow runs against, seen from node1. Each
// call returns new objects, so callers may change them.
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
	add(service("one", ip4("10.96.0.10"), port("", v1.ProtocolTCP, 80, 0)),
		epSlice("one", v4, ports1(8080), endpoint(PodC, Node2Name)))
	add(service("three", ip4("10.96.0.11"), port("", v1.ProtocolTCP, 80, 0)),
		epSlice("three", v4, ports1(8080), endpoint(PodA, NodeName), endpoint(PodC, Node2Name), endpoint(PodD, Node2Name)))

	// NodePort, externalTrafficPolicy Cluster.
	add(service("np-cluster", ip4("10.96.0.12"), port("", v1.ProtocolTCP, 80, 30012)),
		epSlice("np-cluster", v4, ports1(8080), endpoint(PodB, NodeName), endpoint(PodD, Node2Name)))

	// NodePort + LoadBalancer, externalTrafficPolicy Local, with a local
	// endpoint.
	add(service("lb-local", ip4("10.96.0.13"), port("", v1.ProtocolTCP, 80, 30013), lb("203.0.113.13"), etpLocal(32013)),
		epSlice("lb-local", v4, ports1(8081), endpoint(PodA, NodeName), endpoint(PodC, Node2Name)))

	// NodePort, externalTrafficPolicy Local, remote endpoints only.
	add(service("np-local-remote", ip4("10.96.0.14"), port("", v1.ProtocolTCP, 80, 30014), etpLocal(32014)),
		epSlice("np-local-remote", v4, ports1(8082), endpoint(PodC, Node2Name), endpoint(PodD, Node2Name)))

	// internalTrafficPolicy Local, with and without a local endpoint.
	add(service("itp-local", ip4("10.96.0.15"), port("", v1.ProtocolTCP, 80, 0), itpLocal()),
		epSlice("itp-local", v4, ports1(8083), endpoint(PodB, NodeName), endpoint(PodD, Node2Name)))
	add(service("itp-remote", ip4("10.96.0.16"), port("", v1.ProtocolTCP, 80, 0), itpLocal()),
		epSlice("itp-remote", v4, ports1(8084), endpoint(PodC, Node2Name)))

	// sessionAffinity ClientIP, default and short timeouts.
	add(service("sticky", ip4("10.96.0.17"), port("", v1.ProtocolTCP, 80, 30017), affinity(nil)),
		epSlice("sticky", v4, ports1(8085), endpoint(PodA, NodeName), endpoint(PodC, Node2Name)))
	add(service("sticky-short", ip4("10.96.0.18"), port("", v1.ProtocolTCP, 80, 0), affinity(ptr(int32(600)))),
		epSlice("sticky-short", v4, ports1(8086), endpoint(PodD, Node2Name)))

	// LoadBalancer with loadBalancerSourceRanges.
	add(service("lb-ranges", ip4("10.96.0.19"), port("", v1.ProtocolTCP, 443, 30019), lb("203.0.113.19"), ranges("198.51.100.0/24")),
		epSlice("lb-ranges", v4, ports1(8443), endpoint(PodB, NodeName), endpoint(PodD, Node2Name)))

	// externalIPs, Cluster and Local.
	add(service("ext-ip", ip4("10.96.0.20"), port("", v1.ProtocolTCP, 80, 0), externalIPs("203.0.113.20")),
		epSlice("ext-ip", v4, ports1(8087), endpoint(PodC, Node2Name)))
	add(service("ext-ip-local", ip4("10.96.0.21"), port("", v1.ProtocolTCP, 80, 0), externalIPs("203.0.113.21"), etpLocal(0)),
		epSlice("ext-ip-local", v4, ports1(8088), endpoint(PodA, NodeName), endpoint(PodD, Node2Name)))

	// No endpoints at all, on every kind of address.
	add(service("empty", ip4("10.96.0.22"), port("", v1.ProtocolTCP, 80, 30022), lb("203.0.113.22"), externalIPs("203.0.113.23")),
		epSlice("empty", v4, ports1(8080)))

	// UDP.
	add(service("udp", ip4("10.96.0.23"), port("dns", v1.ProtocolUDP, 53, 0)),
		epSlice("udp", v4, []discovery.EndpointPort{slicePort("dns", v1.ProtocolUDP, 5353)}, endpoint(PodB, NodeName), endpoint(PodD, Node2Name)))

	// Dual-stack NodePort + LoadBalancer.
	add(service("dual", dualStack("10.96.0.24", "fd00:10:96::24"), port("", v1.ProtocolTCP, 80, 30024), lb("203.0.113.24", "2001:db8:2::24")),
		epSlice("dual", v4, ports1(8089), endpoint(PodA, NodeName), endpoint(PodC, Node2Name)),
		epSlice("dual", v6, ports1(8089), endpoint(PodA6, NodeName), endpoint(PodC6, Node2Name)))

	// IPv6 single-stack NodePort, externalTrafficPolicy Local.
	add(service("v6-local", ip6("fd00:10:96::26"), port("", v1.ProtocolTCP, 80, 30026), etpLocal(32026)),
		epSlice("v6-local", v6, ports1(8090), endpoint(PodB6, NodeName), endpoint(PodD6, Node2Name)))

	// Terminating endpoints only: two serving, one not.
	add(service("terminating", ip4("10.96.0.27"), port("", v1.ProtocolTCP, 80, 30027), etpLocal(32027)),
		epSlice("terminating", v4, ports1(8091),
			endpoint(PodB, NodeName, terminating(true)), endpoint(PodC, Node2Name, terminating(true)), endpoint(PodD, Node2Name, terminating(false))))

	// Multi-port.
	add(service("multi", ip4("10.96.0.28"), port("http", v1.ProtocolTCP, 80, 0), port("metrics", v1.ProtocolTCP, 9090, 0), port("syslog", v1.ProtocolUDP, 514, 0)),
		epSlice("multi", v4, []discovery.EndpointPort{
			slicePort("http", v1.ProtocolTCP, 8092), slicePort("metrics", v1.ProtocolTCP, 9100), slicePort("syslog", v1.ProtocolUDP, 5514),
		}, endpoint(PodB, NodeName), endpoint(PodC, Node2Name)))

	// Topology-aware routing: zone hints, one node2 endpoint lent to zone-a.
	add(service("zonal", ip4("10.96.0.29"), port("", v1.ProtocolTCP, 80, 0), func(s *v1.Service) {
		s.Spec.TrafficDistribution = ptr(v1.ServiceTrafficDistributionPreferSameZone)
	}),
		epSlice("zonal", v4, ports1(8093),
			endpoint(PodA, NodeName, hints(Zone)), endpoint(PodC, Node2Name, hints(Zone2)), endpoint(PodD, Node2Name, hints(Zone))))

	return plan.Input{
		Services: svcs,
		Slices:   slices,
		Node: &v1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{
				v1.LabelHostname:     NodeName,
				v1.LabelTopologyZone: Zone,
			}},
			Spec: v1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24", "fd00:10:244:1::/64"}},
			Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: NodeIP},
				{Type: v1.NodeInternalIP, Address: NodeIPv6},
			}},
		},
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

// Builders for the fixture's objects, shaped as the API server and the
// EndpointSlice controller write them.

const (
	v4 = discovery.AddressTypeIPv4
	v6 = discovery.AddressTypeIPv6
)

type svcOpt func(*v1.Service)

func service(name string, opts ...svcOpt) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name},
		Spec: v1.ServiceSpec{
			Type:                  v1.ServiceTypeClusterIP,
			Selector:              map[string]string{"app": name},
			SessionAffinity:       v1.ServiceAffinityNone,
			InternalTrafficPolicy: ptr(v1.ServiceInternalTrafficPolicyCluster),
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func ip4(ip string) svcOpt { return family(v1.IPv4Protocol, ip) }
func ip6(ip string) svcOpt { return family(v1.IPv6Protocol, ip) }

func family(f v1.IPFamily, ip string) svcOpt {
	return func(s *v1.Service) {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip}
		s.Spec.IPFamilies = []v1.IPFamily{f}
		s.Spec.IPFamilyPolicy = ptr(v1.IPFamilyPolicySingleStack)
	}
}

func dualStack(ip4, ip6 string) svcOpt {
	return func(s *v1.Service) {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = ip4, []string{ip4, ip6}
		s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
		s.Spec.IPFamilyPolicy = ptr(v1.IPFamilyPolicyRequireDualStack)
	}
}

// port adds a Service port; a nodePort makes the Service a NodePort one
// (unless it is a LoadBalancer) with externalTrafficPolicy Cluster.
func port(name string, proto v1.Protocol, p, nodePort int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: name, Protocol: proto, Port: p, NodePort: nodePort})
		if nodePort != 0 {
			if s.Spec.Type == v1.ServiceTypeClusterIP {
				s.Spec.Type = v1.ServiceTypeNodePort
			}
			if s.Spec.ExternalTrafficPolicy == "" {
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
			}
		}
	}
}

// lb makes the Service a LoadBalancer with these ingress IPs (ipMode VIP).
func lb(ips ...string) svcOpt {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress,
				v1.LoadBalancerIngress{IP: ip, IPMode: ptr(v1.LoadBalancerIPModeVIP)})
		}
	}
}

func ranges(cidrs ...string) svcOpt {
	return func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = cidrs }
}

func externalIPs(ips ...string) svcOpt {
	return func(s *v1.Service) { s.Spec.ExternalIPs = ips }
}

// etpLocal sets externalTrafficPolicy Local; healthCheckNodePort 0 leaves it
// unset (externalIPs-only Services have none).
func etpLocal(healthCheckNodePort int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = healthCheckNodePort
	}
}

func itpLocal() svcOpt {
	return func(s *v1.Service) { s.Spec.InternalTrafficPolicy = ptr(v1.ServiceInternalTrafficPolicyLocal) }
}

// affinity sets sessionAffinity ClientIP; nil leaves the default timeout
// (the API server would write 10800; the plan must default it the same).
func affinity(timeout *int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		if timeout != nil {
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: timeout}}
		}
	}
}

// epSlice is the EndpointSlice of a Service for one address type.
func epSlice(svcName string, at discovery.AddressType, ports []discovery.EndpointPort, eps ...discovery.Endpoint) *discovery.EndpointSlice {
	suffix := "-v4"
	if at == v6 {
		suffix = "-v6"
	}
	return &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: Namespace,
			Name:      svcName + suffix,
			Labels: map[string]string{
				discovery.LabelServiceName: svcName,
				discovery.LabelManagedBy:   "endpointslice-controller.k8s.io",
			},
		},
		AddressType: at,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func ports1(p int32) []discovery.EndpointPort {
	return []discovery.EndpointPort{slicePort("", v1.ProtocolTCP, p)}
}

func slicePort(name string, proto v1.Protocol, p int32) discovery.EndpointPort {
	return discovery.EndpointPort{Name: ptr(name), Protocol: ptr(proto), Port: ptr(p)}
}

type epOpt func(*discovery.Endpoint)

// endpoint is a ready endpoint on a node, in the node's zone.
func endpoint(ip, node string, opts ...epOpt) discovery.Endpoint {
	zone := Zone
	if node != NodeName {
		zone = Zone2
	}
	e := discovery.Endpoint{
		Addresses:  []string{ip},
		Conditions: discovery.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
		NodeName:   ptr(node),
		Zone:       ptr(zone),
	}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// terminating marks an endpoint terminating, still serving or not.
func terminating(serving bool) epOpt {
	return func(e *discovery.Endpoint) {
		e.Conditions = discovery.EndpointConditions{Ready: ptr(false), Serving: ptr(serving), Terminating: ptr(true)}
	}
}

func hints(zones ...string) epOpt {
	return func(e *discovery.Endpoint) {
		e.Hints = &discovery.EndpointHints{}
		for _, z := range zones {
			e.Hints.ForZones = append(e.Hints.ForZones, discovery.ForZone{Name: z})
		}
	}
}

func ptr[T any](v T) *T { return &v }
