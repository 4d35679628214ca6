package plan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// fuzzInput is what FuzzBuild decodes its bytes into.
type fuzzInput struct {
	Service *v1.Service                `json:"service"`
	Slice   *discovery.EndpointSlice   `json:"slice"`
	Slices  []*discovery.EndpointSlice `json:"slices,omitempty"`
}

// anchor is a valid Service planned beside the fuzzed one: whatever the
// fuzzed objects hold, it keeps its port and its endpoint.
func anchorObjects() (*v1.Service, *discovery.EndpointSlice) {
	s := svc("anchor", objects.ClusterIPs("10.96.0.250"))
	s.Namespace = "fuzz-anchor"
	sl := slice("anchor-1", "anchor", v4, tcp(8080), objects.Endpoint("10.244.2.250"))
	sl.Namespace = "fuzz-anchor"
	return s, sl
}

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9-]+$`)
	anchorKey  = Key{ServicePortName: ServicePortName{Namespace: "fuzz-anchor", Name: "anchor", Protocol: v1.ProtocolTCP}, Family: IPv4}
	fuzzConfig = func() Config {
		c := testConfig
		c.NodePortAddresses = prefixes("198.51.100.0/24", "2001:db8:1::/64")
		return c
	}()
)

// FuzzBuild feeds Build a Service and EndpointSlices decoded from JSON
// ({"service": ..., "slice": ..., "slices": [...]}) and checks that it never
// panics and that every port it plans is well formed: valid names, addresses
// of the port's family, nonzero ports, cluster and local endpoints drawn from
// the port's endpoints, local endpoints local. Decide must not panic either
// and may only forward to the endpoints the port allows.
//
// Run: go test -run xxx -fuzz FuzzBuild -fuzztime 120s ./internal/plan/
func FuzzBuild(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var in fuzzInput
		if err := json.Unmarshal(data, &in); err != nil {
			return
		}
		anchor, anchorSlice := anchorObjects()
		input := Input{Services: []*v1.Service{anchor, in.Service}, Node: testNode("zone-a"), Config: fuzzConfig}
		for _, s := range append([]*discovery.EndpointSlice{in.Slice}, in.Slices...) {
			if s != nil && in.Service != nil && s.Labels[discovery.LabelServiceName] == "" {
				// Attach label-less slices to the Service, to reach the
				// endpoint code more often.
				if s.Labels == nil {
					s.Labels = map[string]string{}
				}
				s.Labels[discovery.LabelServiceName] = in.Service.Name
				s.Namespace = in.Service.Namespace
			}
			input.Slices = append(input.Slices, s)
		}
		input.Slices = append(input.Slices, anchorSlice)

		p, errs := Build(input)
		for _, err := range errs {
			if err == nil || err.Error() == "" {
				t.Errorf("empty error in %v", errs)
			}
		}
		touchesAnchor := in.Service != nil && in.Service.Namespace == "fuzz-anchor"
		for _, s := range input.Slices[:len(input.Slices)-1] {
			touchesAnchor = touchesAnchor || (s != nil && s.Namespace == "fuzz-anchor")
		}
		if !touchesAnchor {
			if sp := p.Ports[anchorKey]; sp == nil || len(sp.ClusterEndpoints) != 1 {
				t.Errorf("anchor Service lost its port or endpoint: %+v", sp)
			}
		}
		for k, sp := range p.Ports {
			if sp.Key != k {
				t.Errorf("port %s stored under %s", sp.Key, k)
			}
			if err := checkPort(sp); err != nil {
				t.Errorf("%s: %v", k, err)
			}
			checkDecide(t, p, sp)
		}
	})
}

// checkPort checks the invariants every planned port holds.
func checkPort(sp *ServicePort) error {
	for _, n := range []struct {
		what, s string
		max     int
	}{{"namespace", sp.Namespace, 63}, {"name", sp.Name, 63}, {"port name", sp.Key.Port, 15}} {
		if n.what == "port name" && n.s == "" {
			continue
		}
		if !nameRE.MatchString(n.s) || len(n.s) > n.max {
			return fmt.Errorf("%s %q", n.what, n.s)
		}
	}
	switch sp.Protocol {
	case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
	default:
		return fmt.Errorf("protocol %q", sp.Protocol)
	}
	if sp.Family != IPv4 && sp.Family != IPv6 {
		return fmt.Errorf("family %d", sp.Family)
	}
	ofFamily := func(a netip.Addr) bool {
		if !a.IsValid() || a.Zone() != "" {
			return false
		}
		if sp.Family == IPv4 {
			return a.Is4()
		}
		return a.Is6() && !a.Is4In6()
	}
	if !ofFamily(sp.ClusterIP) {
		return fmt.Errorf("clusterIP %v", sp.ClusterIP)
	}
	for _, a := range append(append([]netip.Addr(nil), sp.ExternalIPs...), sp.LoadBalancerIPs...) {
		if !ofFamily(a) {
			return fmt.Errorf("external or LB IP %v", a)
		}
	}
	for _, r := range sp.Firewall.Allow {
		if !r.IsValid() || !ofFamily(r.Addr()) || r != r.Masked() {
			return fmt.Errorf("source range %v", r)
		}
	}
	if sp.Port == 0 {
		return fmt.Errorf("port 0")
	}
	if sp.AffinitySeconds < 0 || sp.AffinitySeconds > 86400 {
		return fmt.Errorf("affinity %d", sp.AffinitySeconds)
	}
	all := map[netip.AddrPort]Endpoint{}
	for i, e := range sp.Inputs.Endpoints {
		if !ofFamily(e.Addr.Addr()) || e.Addr.Port() == 0 {
			return fmt.Errorf("endpoint %v", e.Addr)
		}
		if i > 0 && sp.Inputs.Endpoints[i-1].Addr.Compare(e.Addr) >= 0 {
			return fmt.Errorf("endpoints not sorted and unique at %v", e.Addr)
		}
		if e.Local != (e.NodeName == "node1") {
			return fmt.Errorf("endpoint %v on %q: local=%v", e.Addr, e.NodeName, e.Local)
		}
		all[e.Addr] = e
	}
	for _, a := range sp.ClusterEndpoints {
		e, ok := all[a]
		if !ok {
			return fmt.Errorf("cluster endpoint %v not among the endpoints", a)
		}
		if !e.Ready && !(e.Serving && e.Terminating) {
			return fmt.Errorf("cluster endpoint %v neither ready nor serving+terminating", a)
		}
	}
	for _, a := range sp.LocalEndpoints {
		if e, ok := all[a]; !ok || !e.Local {
			return fmt.Errorf("local endpoint %v not a local endpoint of the port", a)
		}
	}
	if len(sp.LocalEndpoints) > 0 && !sp.Inputs.InternalLocal && !sp.Inputs.ExternalLocal {
		return fmt.Errorf("local endpoints without a Local policy")
	}
	return nil
}

// checkDecide sends a few packets to the port's addresses.
func checkDecide(t *testing.T, p *Plan, sp *ServicePort) {
	srcs := []string{"10.244.1.3", "198.51.100.100"}
	node := "198.51.100.1"
	if sp.Family == IPv6 {
		srcs, node = []string{"fd00:10:244:1::3", "2001:db8:1::100"}, "2001:db8:1::1"
	}
	dsts := []netip.AddrPort{netip.AddrPortFrom(sp.ClusterIP, sp.Port)}
	if sp.NodePort != 0 {
		dsts = append(dsts, netip.AddrPortFrom(netip.MustParseAddr(node), sp.NodePort))
	}
	for _, a := range append(append([]netip.Addr(nil), sp.ExternalIPs...), sp.LoadBalancerIPs...) {
		dsts = append(dsts, netip.AddrPortFrom(a, sp.Port))
	}
	srcs = append(srcs, node)
	for _, src := range srcs {
		for _, dst := range dsts {
			pkt := Packet{Src: netip.MustParseAddr(src), Dst: dst, Protocol: sp.Protocol, FromHost: src == node}
			d := p.Decide(pkt)
			if d.Reason == "" {
				t.Errorf("%+v: no reason", pkt)
			}
			if d.Action == Forward {
				target := p.Ports[d.Service]
				if target == nil {
					t.Errorf("%+v: forwarded for unknown port %s", pkt, d.Service)
					continue
				}
				for _, tg := range d.Targets {
					if !slices.Contains(target.ClusterEndpoints, tg.Endpoint) && !slices.Contains(target.LocalEndpoints, tg.Endpoint) {
						t.Errorf("%+v: target %v not an endpoint of %s", pkt, tg.Endpoint, d.Service)
					}
				}
				if len(d.Targets) == 0 {
					t.Errorf("%+v: forward without targets", pkt)
				}
			}
		}
	}
}

// fuzzSeeds are realistic inputs: the Services and slices of the Decide
// tests, and a few hand-written documents.
func fuzzSeeds() [][]byte {
	var out [][]byte
	services, slicesList := decideObjects()
	for _, s := range services {
		in := fuzzInput{Service: s}
		for _, sl := range slicesList {
			if sl.Labels[discovery.LabelServiceName] == s.Name {
				in.Slice = sl
			}
		}
		b, err := json.Marshal(in)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	dual := svc("dual", objects.ClusterIPs("10.96.0.30", "fd00:10:96::30"),
		objects.LoadBalancerIngress("203.0.113.50", ""), objects.LoadBalancerIngress("2001:db8:2::50", v1.LoadBalancerIPModeVIP),
		objects.LoadBalancerIngress("203.0.113.51", v1.LoadBalancerIPModeProxy), objects.ExternalIPs("203.0.113.52", "2001:db8:2::52"),
		objects.SourceRanges("198.51.100.0/24 ", "2001:db8:1::/48"), objects.ExternalTrafficPolicyLocal(32000), objects.Affinity(600),
		ports(objects.Port("http", v1.ProtocolTCP, 80, 30080), objects.Port("dns", v1.ProtocolUDP, 53, 30053)))
	b, _ := json.Marshal(fuzzInput{
		Service: dual,
		Slice: slice("dual-4", "dual", v4, []discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, 8080), objects.EndpointPort("dns", v1.ProtocolUDP, 5353)},
			objects.Endpoint("10.244.1.2", objects.OnNode("node1"), objects.InZone("zone-a"), objects.HintZones("zone-a"), objects.HintNodes("node1")),
			objects.Endpoint("10.244.2.2", objects.OnNode("node2"), objects.InZone("zone-b"), objects.HintZones("zone-b"), termServing()),
			objects.Endpoint("10.244.2.3", objects.OnNode("node2"), notReady())),
		Slices: []*discovery.EndpointSlice{slice("dual-6", "dual", v6, []discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, 8080)},
			objects.Endpoint("fd00:10:244:1::2", objects.OnNode("node1")), objects.Endpoint("fd00:10:244:2::2", objects.OnNode("node2"), termNotServing()))},
	})
	out = append(out, b)
	for _, bad := range badServices() {
		b, _ := json.Marshal(fuzzInput{Service: bad.svc, Slice: sliceFor(bad.svc)})
		out = append(out, b)
	}
	for _, bad := range badSlices() {
		b, _ := json.Marshal(fuzzInput{Service: svc("a", objects.ClusterIPs("10.96.0.1", "fd00:10:96::1")), Slice: bad.slice})
		out = append(out, b)
	}
	for _, s := range []string{
		`{"service":{"metadata":{"namespace":"default","name":"web"},"spec":{"type":"ClusterIP","clusterIP":"10.96.0.10","ports":[{"port":80,"targetPort":8080}]}},` +
			`"slice":{"metadata":{"namespace":"default","name":"web-abc","labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4",` +
			`"ports":[{"name":"","port":8080,"protocol":"TCP"}],"endpoints":[{"addresses":["10.244.1.2"],"conditions":{"ready":true},"nodeName":"node1"}]}}`,
		`{"service":{"metadata":{"namespace":"default","name":"ext"},"spec":{"type":"ExternalName","externalName":"example.com"}}}`,
		`{"service":{"metadata":{"namespace":"default","name":"headless"},"spec":{"clusterIP":"None","ports":[{"port":80}]}}}`,
		`{"service":{"metadata":{"namespace":"default","name":"Bad Name"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":70000}]}}}`,
		`{"service":{"metadata":{"namespace":"default","name":"z"},"spec":{"clusterIP":"fd00::1%eth0","clusterIPs":["fd00::1%eth0"],"ports":[{"port":1}]}}}`,
		`{"service":{"metadata":{"namespace":"default","name":"lb"},"spec":{"type":"LoadBalancer","clusterIP":"10.96.0.1","ports":[{"port":443,"nodePort":0}],"loadBalancerSourceRanges":["::ffff:198.51.100.0/120"," 10.0.0.0/8"]},` +
			`"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.9","ipMode":"VIP"},{"ip":"::ffff:203.0.113.10"},{"hostname":"x"}]}}},` +
			`"slice":{"addressType":"IPv4","ports":[{"port":443}],"endpoints":[{"addresses":["::ffff:10.244.1.9"],"conditions":{}}]}}`,
		`{"slice":{"metadata":{"name":"s","labels":{"kubernetes.io/service-name":"anchor"},"namespace":"fuzz-anchor"},"addressType":"IPv4","ports":[{"port":99999}],"endpoints":[{"addresses":["10.0.0.1"]}]}}`,
	} {
		out = append(out, []byte(s))
	}
	return out
}
