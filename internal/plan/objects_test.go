package plan

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

func testNode(zone string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{}}}
	if zone != "" {
		n.Labels[v1.LabelTopologyZone] = zone
	}
	return n
}

type svcOpt func(*v1.Service)

// svc is a ClusterIP Service 10.96.0.1 with one unnamed TCP port 80, changed
// by the options.
func svc(name string, opts ...svcOpt) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name},
		Spec: v1.ServiceSpec{
			Type:      v1.ServiceTypeClusterIP,
			ClusterIP: "10.96.0.1",
			Ports:     []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func namespace(ns string) svcOpt { return func(s *v1.Service) { s.Namespace = ns } }

func clusterIPs(ips ...string) svcOpt {
	return func(s *v1.Service) {
		s.Spec.ClusterIP = ips[0]
		s.Spec.ClusterIPs = ips
	}
}

func svcType(t v1.ServiceType) svcOpt { return func(s *v1.Service) { s.Spec.Type = t } }

// ports replaces the Service's ports.
func ports(ps ...v1.ServicePort) svcOpt { return func(s *v1.Service) { s.Spec.Ports = ps } }

func sport(name string, proto v1.Protocol, port, nodePort int32) v1.ServicePort {
	return v1.ServicePort{Name: name, Protocol: proto, Port: port, NodePort: nodePort}
}

// nodePort sets the node port of the first port and makes it a NodePort
// Service (unless it is already a LoadBalancer).
func nodePort(np int32) svcOpt {
	return func(s *v1.Service) {
		if s.Spec.Type != v1.ServiceTypeLoadBalancer {
			s.Spec.Type = v1.ServiceTypeNodePort
		}
		s.Spec.Ports[0].NodePort = np
	}
}

func etpLocal() svcOpt {
	return func(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal }
}

func itpLocal() svcOpt {
	return func(s *v1.Service) {
		p := v1.ServiceInternalTrafficPolicyLocal
		s.Spec.InternalTrafficPolicy = &p
	}
}

func externalIPs(ips ...string) svcOpt { return func(s *v1.Service) { s.Spec.ExternalIPs = ips } }

// lbIngress adds a load-balancer ingress IP with an ipMode ("" for unset).
func lbIngress(ip string, mode v1.LoadBalancerIPMode) svcOpt {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		ing := v1.LoadBalancerIngress{IP: ip}
		if mode != "" {
			ing.IPMode = &mode
		}
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, ing)
	}
}

func sourceRanges(r ...string) svcOpt {
	return func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = r }
}

// affinity sets sessionAffinity ClientIP; timeout 0 leaves the timeout unset.
func affinity(timeout int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		if timeout != 0 {
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &timeout}}
		}
	}
}

func label(k, v string) svcOpt {
	return func(s *v1.Service) {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[k] = v
	}
}

// slice is an EndpointSlice of Service svcName in testNS.
func slice(name, svcName string, at discovery.AddressType, ps []discovery.EndpointPort, eps ...discovery.Endpoint) *discovery.EndpointSlice {
	return &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: testNS, Name: name,
			Labels: map[string]string{discovery.LabelServiceName: svcName},
		},
		AddressType: at,
		Ports:       ps,
		Endpoints:   eps,
	}
}

// eport is one EndpointSlice port; name "" is the unnamed port.
func eport(name string, proto v1.Protocol, port int32) discovery.EndpointPort {
	return discovery.EndpointPort{Name: &name, Protocol: &proto, Port: &port}
}

// tcp is the single unnamed TCP port of an EndpointSlice.
func tcp(port int32) []discovery.EndpointPort {
	return []discovery.EndpointPort{eport("", v1.ProtocolTCP, port)}
}

type epOpt func(*discovery.Endpoint)

// ep is an endpoint with the given address, conditions left unset (ready).
func ep(ip string, opts ...epOpt) discovery.Endpoint {
	e := discovery.Endpoint{Addresses: []string{ip}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func on(node string) epOpt { return func(e *discovery.Endpoint) { e.NodeName = &node } }

func inZone(z string) epOpt { return func(e *discovery.Endpoint) { e.Zone = &z } }

func ptr[T any](v T) *T { return &v }

// cond sets all three conditions.
func cond(ready, serving, terminating bool) epOpt {
	return func(e *discovery.Endpoint) {
		e.Conditions = discovery.EndpointConditions{Ready: ptr(ready), Serving: ptr(serving), Terminating: ptr(terminating)}
	}
}

func notReady() epOpt       { return cond(false, false, false) }
func termServing() epOpt    { return cond(false, true, true) }
func termNotServing() epOpt { return cond(false, false, true) }

func hintZones(zs ...string) epOpt {
	return func(e *discovery.Endpoint) { ensureHints(e).ForZones = zoneHints(zs) }
}

func hintNodes(ns ...string) epOpt {
	return func(e *discovery.Endpoint) { ensureHints(e).ForNodes = nodeHints(ns) }
}

func ensureHints(e *discovery.Endpoint) *discovery.EndpointHints {
	if e.Hints == nil {
		e.Hints = &discovery.EndpointHints{}
	}
	return e.Hints
}

func zoneHints(zs []string) []discovery.ForZone {
	out := make([]discovery.ForZone, len(zs))
	for i, z := range zs {
		out[i].Name = z
	}
	return out
}

func nodeHints(ns []string) []discovery.ForNode {
	out := make([]discovery.ForNode, len(ns))
	for i, n := range ns {
		out[i].Name = n
	}
	return out
}

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

func aps(ss ...string) []netip.AddrPort {
	if len(ss) == 0 {
		return nil
	}
	out := make([]netip.AddrPort, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddrPort(s)
	}
	return out
}

func addrList(ss ...string) []netip.Addr {
	if len(ss) == 0 {
		return nil
	}
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	if len(ss) == 0 {
		return nil
	}
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
