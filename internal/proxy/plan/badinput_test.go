package plan

import (
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// goodObjects are valid Services and slices planned beside every bad object:
// a bad object must never cost them their ports.
func goodObjects() ([]*v1.Service, []*discovery.EndpointSlice, []Key) {
	services := []*v1.Service{
		svc("good1", objects.ClusterIPs("10.96.0.11")),
		svc("good2", objects.ClusterIPs("10.96.0.12", "fd00:10:96::12"), objects.NodePort(0),
			ports(objects.Port("http", v1.ProtocolTCP, 80, 30080), objects.Port("dns", v1.ProtocolUDP, 53, 0))),
	}
	slices := []*discovery.EndpointSlice{
		slice("good1-1", "good1", v4, tcp(8080), objects.Endpoint("10.244.2.2")),
		slice("good2-1", "good2", v4, []discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, 8080)}, objects.Endpoint("10.244.2.3")),
		slice("good2-2", "good2", v6, []discovery.EndpointPort{objects.EndpointPort("dns", v1.ProtocolUDP, 5353)}, objects.Endpoint("fd00:10:244:2::3")),
	}
	keys := []Key{
		key("good1", "", v1.ProtocolTCP, IPv4),
		key("good2", "http", v1.ProtocolTCP, IPv4),
		key("good2", "dns", v1.ProtocolUDP, IPv4),
		key("good2", "http", v1.ProtocolTCP, IPv6),
		key("good2", "dns", v1.ProtocolUDP, IPv6),
	}
	return services, slices, keys
}

// TestBadServices: Build never panics, leaves the bad Service out with an
// error naming it (namespace/name) and the field, and plans every other
// Service.
func TestBadServices(t *testing.T) {
	for _, tt := range badServices() {
		t.Run(tt.name, func(t *testing.T) {
			services, slices, keys := goodObjects()
			// The bad Service goes first and last, with a slice, so that its
			// position cannot matter.
			services = append([]*v1.Service{tt.svc}, services...)
			services = append(services, tt.svc)
			slices = append(slices, sliceFor(tt.svc))
			p, errs := Build(Input{Services: services, Slices: slices, Node: testNode("zone-a"), Config: testConfig})

			if len(errs) != 1 {
				t.Fatalf("errors %q, want one", errs)
			}
			msg := errs[0].Error()
			// An odd name is quoted, so it cannot forge a line in a log.
			if obj := tt.svc.Namespace + "/" + tt.svc.Name; !strings.Contains(msg, obj) && !strings.Contains(msg, strconv.Quote(obj)) {
				t.Errorf("error %q does not name %q", msg, obj)
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("error %q spans lines", msg)
			}
			if !strings.Contains(msg, tt.field) {
				t.Errorf("error %q does not name field %q", msg, tt.field)
			}
			assertOnlyGood(t, p, keys)
		})
	}
}

type badService struct {
	name  string
	svc   *v1.Service // its name is "bad" unless the case is about names
	field string      // the field path the error must name
}

// badServices are invalid Services, each with the field its error names.
// They also seed FuzzBuild.
func badServices() []badService {
	long := strings.Repeat("a", 300)
	return []badService{
		// Addresses.
		{"clusterIP not an IP", svc("bad", objects.ClusterIPs("10.96.0.300")), "spec.clusterIPs[0]"},
		{"clusterIP garbage", svc("bad", objects.ClusterIPs("ten.ninety-six")), "spec.clusterIPs[0]"},
		{"clusterIP CIDR", svc("bad", objects.ClusterIPs("10.96.0.1/32")), "spec.clusterIPs[0]"},
		{"clusterIP with an IPv6 zone", svc("bad", objects.ClusterIPs("fd00:10:96::1%eth0")), "spec.clusterIPs[0]"},
		{"clusterIP with rule syntax in a zone", svc("bad", objects.ClusterIPs("fd00:10:96::1%x; drop\n")), "spec.clusterIPs[0]"},
		{"second clusterIP bad", svc("bad", objects.ClusterIPs("10.96.0.1", "fd00::zz")), "spec.clusterIPs[1]"},
		{"two clusterIPs of one family", svc("bad", objects.ClusterIPs("10.96.0.1", "10.96.0.2")), "spec.clusterIPs[1]"},
		{"clusterIPs with whitespace", svc("bad", objects.ClusterIPs(" 10.96.0.1")), "spec.clusterIPs[0]"},
		{"externalIP not an IP", svc("bad", objects.ExternalIPs("203.0.113.1", "203.0.113.256")), "spec.externalIPs[1]"},
		{"externalIP with a zone", svc("bad", objects.ExternalIPs("2001:db8:2::1%lo")), "spec.externalIPs[0]"},
		{"externalIP empty", svc("bad", objects.ExternalIPs("")), "spec.externalIPs[0]"},
		{"LB ingress not an IP", svc("bad", objects.LoadBalancerIngress("203.0.113.1", ""),
			objects.LoadBalancerIngress("lb.example.com", v1.LoadBalancerIPModeVIP)), "status.loadBalancer.ingress[1].ip"},
		{"LB ingress with a zone", svc("bad", objects.LoadBalancerIngress("2001:db8:2::1%eth0", "")), "status.loadBalancer.ingress[0].ip"},
		{"source range not a CIDR", svc("bad", objects.SourceRanges("198.51.100.0/24", "bogus")), "spec.loadBalancerSourceRanges[1]"},
		{"source range bits out of range", svc("bad", objects.SourceRanges("198.51.100.0/33")), "spec.loadBalancerSourceRanges[0]"},
		{"source range without bits", svc("bad", objects.SourceRanges("198.51.100.0")), "spec.loadBalancerSourceRanges[0]"},

		// Ports.
		{"no ports", svc("bad", ports()), "spec.ports"},
		{"port 0", svc("bad", ports(objects.Port("", v1.ProtocolTCP, 0, 0))), "spec.ports[0].port"},
		{"port 70000", svc("bad", ports(objects.Port("", v1.ProtocolTCP, 70000, 0))), "spec.ports[0].port"},
		{"port negative", svc("bad", ports(objects.Port("", v1.ProtocolTCP, -80, 0))), "spec.ports[0].port"},
		{"second port out of range", svc("bad", ports(objects.Port("a", v1.ProtocolTCP, 80, 0), objects.Port("b", v1.ProtocolTCP, 65536, 0))), "spec.ports[1].port"},
		{"nodePort 70000", svc("bad", ports(objects.Port("", v1.ProtocolTCP, 80, 70000))), "spec.ports[0].nodePort"},
		{"nodePort negative", svc("bad", ports(objects.Port("", v1.ProtocolTCP, 80, -1))), "spec.ports[0].nodePort"},
		{"duplicate ports", svc("bad", ports(objects.Port("a", v1.ProtocolTCP, 80, 0), objects.Port("b", v1.ProtocolTCP, 80, 0))), "spec.ports[1].port"},
		{"duplicate ports, protocol defaulted", svc("bad", ports(objects.Port("a", v1.ProtocolTCP, 80, 0), objects.Port("b", "", 80, 0))), "spec.ports[1].port"},
		{"duplicate port names", svc("bad", ports(objects.Port("a", v1.ProtocolTCP, 80, 0), objects.Port("a", v1.ProtocolUDP, 81, 0))), "spec.ports[1].name"},
		{"missing name on multi-port", svc("bad", ports(objects.Port("", v1.ProtocolTCP, 80, 0), objects.Port("b", v1.ProtocolTCP, 81, 0))), "spec.ports[0].name"},
		{"missing second name on multi-port", svc("bad", ports(objects.Port("a", v1.ProtocolTCP, 80, 0), objects.Port("", v1.ProtocolTCP, 81, 0))), "spec.ports[1].name"},
		{"invalid protocol", svc("bad", ports(objects.Port("", "ICMP", 80, 0))), "spec.ports[0].protocol"},
		{"lower-case protocol", svc("bad", ports(objects.Port("", "tcp", 80, 0))), "spec.ports[0].protocol"},
		{"upper-case port name", svc("bad", ports(objects.Port("HTTP", v1.ProtocolTCP, 80, 0))), "spec.ports[0].name"},
		{"port name too long", svc("bad", ports(objects.Port("a-very-long-port-name", v1.ProtocolTCP, 80, 0))), "spec.ports[0].name"},
		{"port name with a space", svc("bad", ports(objects.Port("a b", v1.ProtocolTCP, 80, 0))), "spec.ports[0].name"},
		{"port name with rule syntax", svc("bad", ports(objects.Port(`x"};drop`, v1.ProtocolTCP, 80, 0))), "spec.ports[0].name"},
		{"port name leading dash", svc("bad", ports(objects.Port("-a", v1.ProtocolTCP, 80, 0))), "spec.ports[0].name"},
		{"healthCheckNodePort out of range", svc("bad", objects.NodePort(30000), objects.ExternalTrafficPolicyLocal(70000)), "spec.healthCheckNodePort"},
		{"healthCheckNodePort negative", svc("bad", objects.NodePort(30000), objects.ExternalTrafficPolicyLocal(-1)), "spec.healthCheckNodePort"},

		// Affinity.
		{"affinity timeout 0", svc("bad", objects.Affinity(0), withTimeout(0)), "spec.sessionAffinityConfig.clientIP.timeoutSeconds"},
		{"affinity timeout negative", svc("bad", objects.Affinity(-5)), "spec.sessionAffinityConfig.clientIP.timeoutSeconds"},
		{"affinity timeout over a day", svc("bad", objects.Affinity(86401)), "spec.sessionAffinityConfig.clientIP.timeoutSeconds"},

		// Names.
		{"upper-case name", svc("Bad"), "metadata.name"},
		{"name with a space", svc("bad name"), "metadata.name"},
		{"name with quotes", svc(`bad"name'`), "metadata.name"},
		{"name with a semicolon", svc("bad;name"), "metadata.name"},
		{"name with a newline", svc("bad\nname"), "metadata.name"},
		{"name with braces", svc("bad{}"), "metadata.name"},
		{"name with a slash", svc("bad/name"), "metadata.name"},
		{"name with a dot", svc("bad.name"), "metadata.name"},
		{"name of 300 characters", svc(long), "metadata.name"},
		{"name of 64 characters", svc(strings.Repeat("b", 64)), "metadata.name"},
		{"unicode name", svc("bäd-nämé"), "metadata.name"},
		{"invalid UTF-8 name", svc("bad\xff"), "metadata.name"},
		{"name with a leading dash", svc("-bad"), "metadata.name"},
		{"name with a trailing dash", svc("bad-"), "metadata.name"},
		{"empty name", svc(""), "metadata.name"},
		{"upper-case namespace", svc("bad", namespace("NS")), "metadata.namespace"},
		{"namespace with rule syntax", svc("bad", namespace(`ns"; flush ruleset; "`)), "metadata.namespace"},
		{"namespace of 300 characters", svc("bad", namespace(long)), "metadata.namespace"},
		{"empty namespace", svc("bad", namespace("")), "metadata.namespace"},
	}
}

func withTimeout(sec int32) objects.ServiceOption {
	return func(s *v1.Service) {
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &sec}}
	}
}

// sliceFor is a valid slice for a Service, so a bad Service has endpoints.
func sliceFor(s *v1.Service) *discovery.EndpointSlice {
	sl := slice(s.Name+"-1", s.Name, v4, tcp(8080), objects.Endpoint("10.244.2.9"))
	sl.Namespace = s.Namespace
	return sl
}

// assertOnlyGood checks that the plan holds exactly the good ports, each
// with its endpoints (good2 has http endpoints in IPv4 and dns endpoints in
// IPv6 only).
func assertOnlyGood(t *testing.T, p *Plan, keys []Key) {
	t.Helper()
	for _, k := range keys {
		sp := p.Ports[k]
		if sp == nil {
			t.Errorf("good port %s missing", k)
			continue
		}
		want := 1
		if k.Name == "good2" && (k.Port == "dns") != (k.Family == IPv6) {
			want = 0
		}
		if len(sp.ClusterEndpoints) != want {
			t.Errorf("good port %s: endpoints %v, want %d", k, sp.ClusterEndpoints, want)
		}
	}
	if len(p.Ports) != len(keys) {
		for k := range p.Ports {
			t.Logf("planned: %s", k)
		}
		t.Errorf("%d ports planned, want the %d good ones", len(p.Ports), len(keys))
	}
}

// TestBadSlices: an invalid EndpointSlice is skipped whole, with an error
// naming it and the field; its Service is planned from its other slices.
func TestBadSlices(t *testing.T) {
	for _, tt := range badSlices() {
		t.Run(tt.name, func(t *testing.T) {
			services, slices, keys := goodObjects()
			services = append(services, svc("a", objects.ClusterIPs("10.96.0.1", "fd00:10:96::1")))
			slices = append(slices, tt.slice,
				slice("a-good", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2")),
				slice("a-good6", "a", v6, tcp(8080), objects.Endpoint("fd00:10:244:2::2")))
			p, errs := Build(Input{Services: services, Slices: slices, Node: testNode("zone-a"), Config: testConfig})
			if len(errs) != 1 {
				t.Fatalf("errors %q, want one", errs)
			}
			msg := errs[0].Error()
			if !strings.Contains(msg, "ns/a-bad") || !strings.Contains(msg, tt.field) {
				t.Errorf("error %q does not name ns/a-bad and %q", msg, tt.field)
			}
			for f, want := range map[Family]string{IPv4: "10.244.2.2:8080", IPv6: "[fd00:10:244:2::2]:8080"} {
				sp := p.Ports[key("a", "", v1.ProtocolTCP, f)]
				if sp == nil {
					t.Fatalf("a %s: not planned", f)
				}
				if got := sp.ClusterEndpoints; len(got) != 1 || got[0].String() != want {
					t.Errorf("a %s: endpoints %v, want only %s (the bad slice skipped whole)", f, got, want)
				}
			}
			delete(p.Ports, key("a", "", v1.ProtocolTCP, IPv4))
			delete(p.Ports, key("a", "", v1.ProtocolTCP, IPv6))
			assertOnlyGood(t, p, keys)
		})
	}
}

type badSlice struct {
	name  string
	slice *discovery.EndpointSlice // of Service "a"; named "a-bad"
	field string
}

// badSlices are invalid EndpointSlices of Service "a", each with the field
// its error names. They also seed FuzzBuild.
func badSlices() []badSlice {
	return []badSlice{
		{"endpoint address not an IP", slice("a-bad", "a", v4, tcp(8080), objects.Endpoint("10.244.2.4"), objects.Endpoint("10.244.2.300")), "endpoints[1].addresses[0]"},
		{"endpoint address garbage", slice("a-bad", "a", v4, tcp(8080), objects.Endpoint("pod-a")), "endpoints[0].addresses[0]"},
		{"endpoint address empty", slice("a-bad", "a", v4, tcp(8080), objects.Endpoint("")), "endpoints[0].addresses[0]"},
		{"IPv6 address in an IPv4 slice", slice("a-bad", "a", v4, tcp(8080), objects.Endpoint("fd00:10:244:2::4")), "endpoints[0].addresses[0]"},
		{"IPv4 address in an IPv6 slice", slice("a-bad", "a", v6, tcp(8080), objects.Endpoint("10.244.2.4")), "endpoints[0].addresses[0]"},
		{"IPv4-mapped address in an IPv6 slice", slice("a-bad", "a", v6, tcp(8080), objects.Endpoint("::ffff:10.244.2.4")), "endpoints[0].addresses[0]"},
		{"endpoint address with a zone", slice("a-bad", "a", v6, tcp(8080), objects.Endpoint("fe80::1%eth0")), "endpoints[0].addresses[0]"},
		{"endpoint address CIDR", slice("a-bad", "a", v4, tcp(8080), objects.Endpoint("10.244.2.4/32")), "endpoints[0].addresses[0]"},
		{"port 0", slice("a-bad", "a", v4, tcp(0), objects.Endpoint("10.244.2.4")), "ports[0].port"},
		{"port 70000", slice("a-bad", "a", v4, tcp(70000), objects.Endpoint("10.244.2.4")), "ports[0].port"},
		{"port negative", slice("a-bad", "a", v4, tcp(-1), objects.Endpoint("10.244.2.4")), "ports[0].port"},
		{"second port bad", slice("a-bad", "a", v4,
			[]discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolTCP, 8080), objects.EndpointPort("x", v1.ProtocolTCP, 65536)},
			objects.Endpoint("10.244.2.4")), "ports[1].port"},
	}
}

// TestBadEverything puts every kind of bad object in one input.
func TestBadEverything(t *testing.T) {
	services, slices, keys := goodObjects()
	bad := []*v1.Service{
		svc("bad1", objects.ClusterIPs("nope")),
		svc("bad2", ports(objects.Port("", v1.ProtocolTCP, 0, 0))),
		svc("Bad3"),
		svc("bad4", objects.Affinity(100000)),
		svc("bad5", objects.ExternalIPs("1.2.3")),
		nil,
	}
	services = append(bad, services...)
	slices = append([]*discovery.EndpointSlice{nil, slice("good1-bad", "good1", v4, tcp(8080), objects.Endpoint("x"))}, slices...)
	slices = append(slices, nil)
	p, errs := Build(Input{Services: services, Slices: slices, Node: nil, Config: testConfig})
	if len(errs) != 6 {
		t.Errorf("%d errors, want 6: %q", len(errs), errs)
	}
	assertOnlyGood(t, p, keys)
	if _, errs := Build(Input{}); len(errs) != 0 {
		t.Errorf("empty input: %v", errs)
	}
}

// TestOddButValid checks the boundaries that must still be accepted.
func TestOddButValid(t *testing.T) {
	p := build(t, []*v1.Service{
		svc(strings.Repeat("a", 63), objects.ClusterIPs("10.96.0.1")),
		svc("0", objects.ClusterIPs("10.96.0.2"), namespace(strings.Repeat("n", 63))),
		svc("b", objects.ClusterIPs("10.96.0.3"), ports(objects.Port("a-15-characters", v1.ProtocolTCP, 65535, 65535), objects.Port("p1", v1.ProtocolSCTP, 1, 1))),
		svc("c", objects.ClusterIPs("10.96.0.4"), objects.Affinity(86400)),
		svc("d", objects.ClusterIPs("10.96.0.5"), objects.Affinity(1)),
	}, slice("b-1", "b", v4, []discovery.EndpointPort{objects.EndpointPort("a-15-characters", v1.ProtocolTCP, 65535)}, objects.Endpoint("10.244.2.2")))
	if len(p.Ports) != 6 {
		t.Errorf("%d ports, want 6", len(p.Ports))
	}
	if sp := p.Ports[key("b", "a-15-characters", v1.ProtocolTCP, IPv4)]; sp == nil || sp.Port != 65535 || sp.NodePort != 65535 || len(sp.ClusterEndpoints) != 1 {
		t.Errorf("b: %+v", sp)
	}
}
