package plan

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// Builders for the objects the plan reads. Every test in this package uses
// the same small address plan: this node is "node1" in "zone-a" with
// 198.51.100.1 / 2001:db8:1::1, the other node is "node2" in "zone-b", pods
// are in 10.244.0.0/16 and fd00:10:244::/56, ClusterIPs in 10.96.0.0/16 and
// fd00:10:96::/112, external addresses in 203.0.113.0/24 and 2001:db8:2::/64.

const testNS = "ns"

var testConfig = Config{
	NodeName:     "node1",
	ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")},
	NodeIPs:      []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:1::1")},
}

// testNode is this node, node1, in zone ("" for none).
func testNode(zone string) *v1.Node { return objects.Node("node1", zone) }

// svc is a ClusterIP Service 10.96.0.1 in testNS with one unnamed TCP port
// 80, changed by the options.
func svc(name string, opts ...objects.ServiceOption) *v1.Service {
	return objects.Service(testNS, name, append([]objects.ServiceOption{
		objects.ClusterIP("10.96.0.1"),
		objects.Port("", v1.ProtocolTCP, 80, 0),
	}, opts...)...)
}

// namespace moves the Service out of testNS.
func namespace(ns string) objects.ServiceOption { return func(s *v1.Service) { s.Namespace = ns } }

// ports replaces the Service's ports with the ones the options add.
func ports(ps ...objects.ServiceOption) objects.ServiceOption {
	return func(s *v1.Service) {
		s.Spec.Ports = nil
		for _, p := range ps {
			p(s)
		}
	}
}

// slice is an EndpointSlice of Service svcName in testNS.
func slice(name, svcName string, at discovery.AddressType, ps []discovery.EndpointPort, eps ...discovery.Endpoint) *discovery.EndpointSlice {
	return objects.Slice(testNS, name, svcName, at, ps, eps...)
}

// tcp is the single unnamed TCP port of an EndpointSlice.
func tcp(port int32) []discovery.EndpointPort {
	return []discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolTCP, port)}
}

// Endpoint conditions other than ready (which unset conditions also mean).
func notReady() objects.EndpointOption       { return objects.Conditions(false, false, false) }
func termServing() objects.EndpointOption    { return objects.Conditions(false, true, true) }
func termNotServing() objects.EndpointOption { return objects.Conditions(false, false, true) }

// build plans the objects on node1 in zone-a with testConfig and fails on
// any validation error.
func build(t *testing.T, services []*v1.Service, slices ...*discovery.EndpointSlice) *Plan {
	t.Helper()
	p, errs := Build(Input{Services: services, Slices: slices, Node: testNode("zone-a"), Config: testConfig})
	for _, err := range errs {
		t.Errorf("unexpected error: %v", err)
	}
	return p
}

// portsOf returns the plan's ports of one Service, sorted by key.
func portsOf(p *Plan, name string) []*ServicePort {
	var out []*ServicePort
	for _, f := range Families {
		for _, sp := range p.PortsOf(f) {
			if sp.Namespace == testNS && sp.Name == name {
				out = append(out, sp)
			}
		}
	}
	return out
}

// onePort returns the only port of a Service in a family, failing if there
// is not exactly one.
func onePort(t *testing.T, p *Plan, name string, f Family) *ServicePort {
	t.Helper()
	var found []*ServicePort
	for _, sp := range portsOf(p, name) {
		if sp.Family == f {
			found = append(found, sp)
		}
	}
	if len(found) != 1 {
		t.Fatalf("service %s %s: %d ports, want 1", name, f, len(found))
	}
	return found[0]
}

func aps(ss ...string) []netip.AddrPort    { return parseAll(netip.MustParseAddrPort, ss) }
func addrList(ss ...string) []netip.Addr   { return parseAll(netip.MustParseAddr, ss) }
func prefixes(ss ...string) []netip.Prefix { return parseAll(netip.MustParsePrefix, ss) }

// parseAll parses each string; none gives nil, as the plan leaves it.
func parseAll[T any](parse func(string) T, ss []string) []T {
	if len(ss) == 0 {
		return nil
	}
	out := make([]T, len(ss))
	for i, s := range ss {
		out[i] = parse(s)
	}
	return out
}
