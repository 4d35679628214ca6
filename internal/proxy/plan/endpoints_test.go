package plan

import (
	"net/netip"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

const (
	v4 = discovery.AddressTypeIPv4
	v6 = discovery.AddressTypeIPv6
)

// TestEndpointConditions covers how EndpointSlice endpoints become plan
// endpoints: conditions, locality, zone, hints, deduplication, which slices
// and which slice ports count.
func TestEndpointConditions(t *testing.T) {
	type want struct {
		Addr                        string
		Node, Zone                  string
		Ready, Serving, Terminating bool
		Local                       bool
		ForNodes, ForZones          []string
	}
	tests := []struct {
		name   string
		svc    *v1.Service
		slices []*discovery.EndpointSlice
		family Family
		port   string // service port name
		proto  v1.Protocol
		want   []want
	}{
		{
			name: "nil conditions mean ready and serving, not terminating",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{slice("a-1", "a", v4, tcp(8080),
				objects.Endpoint("10.244.2.2", objects.OnNode("node2"), objects.InZone("zone-b")))},
			want: []want{{Addr: "10.244.2.2:8080", Node: "node2", Zone: "zone-b", Ready: true, Serving: true}},
		},
		{
			// The API: "A nil value should be interpreted as true".
			name: "serving nil means serving",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{slice("a-1", "a", v4, tcp(8080),
				objects.Endpoint("10.244.2.2", objects.Ready(false)),
				objects.Endpoint("10.244.2.3", objects.Ready(true)))},
			want: []want{
				{Addr: "10.244.2.2:8080", Serving: true},
				{Addr: "10.244.2.3:8080", Ready: true, Serving: true},
			},
		},
		{
			name: "all conditions, sorted by address",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{slice("a-1", "a", v4, tcp(8080),
				objects.Endpoint("10.244.2.5", termNotServing()),
				objects.Endpoint("10.244.2.4", termServing()),
				objects.Endpoint("10.244.2.3", notReady()),
				objects.Endpoint("10.244.2.2", objects.Conditions(true, true, false)),
				objects.Endpoint("10.244.1.2", objects.OnNode("node1")))},
			want: []want{
				{Addr: "10.244.1.2:8080", Node: "node1", Ready: true, Serving: true, Local: true},
				{Addr: "10.244.2.2:8080", Ready: true, Serving: true},
				{Addr: "10.244.2.3:8080"},
				{Addr: "10.244.2.4:8080", Serving: true, Terminating: true},
				{Addr: "10.244.2.5:8080", Terminating: true},
			},
		},
		{
			name: "local is nodeName equal to Config.NodeName",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{slice("a-1", "a", v4, tcp(8080),
				objects.Endpoint("10.244.1.2", objects.OnNode("node1")), objects.Endpoint("10.244.1.3", objects.OnNode("Node1")),
				objects.Endpoint("10.244.2.2", objects.OnNode("node2")), objects.Endpoint("10.244.2.3"))},
			want: []want{
				{Addr: "10.244.1.2:8080", Node: "node1", Ready: true, Serving: true, Local: true},
				{Addr: "10.244.1.3:8080", Node: "Node1", Ready: true, Serving: true},
				{Addr: "10.244.2.2:8080", Node: "node2", Ready: true, Serving: true},
				{Addr: "10.244.2.3:8080", Ready: true, Serving: true},
			},
		},
		{
			name: "hints are kept",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{slice("a-1", "a", v4, tcp(8080),
				objects.Endpoint("10.244.2.2", objects.HintZones("zone-a", "zone-b"), objects.HintNodes("node2")))},
			want: []want{{Addr: "10.244.2.2:8080", Ready: true, Serving: true, ForNodes: []string{"node2"}, ForZones: []string{"zone-a", "zone-b"}}},
		},
		{
			name: "duplicates across slices: the ready one wins (not-ready slice first)",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{
				slice("a-1", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2", termServing(), objects.OnNode("node2"))),
				slice("a-2", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2", objects.OnNode("node2"), objects.InZone("zone-b"))),
			},
			want: []want{{Addr: "10.244.2.2:8080", Node: "node2", Zone: "zone-b", Ready: true, Serving: true}},
		},
		{
			name: "duplicates across slices: the ready one wins (ready slice first)",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{
				slice("a-1", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2", objects.OnNode("node2"), objects.InZone("zone-b"))),
				slice("a-2", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2", termServing(), objects.OnNode("node2"))),
			},
			want: []want{{Addr: "10.244.2.2:8080", Node: "node2", Zone: "zone-b", Ready: true, Serving: true}},
		},
		{
			name: "duplicates inside one slice",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{
				slice("a-1", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2", notReady()), objects.Endpoint("10.244.2.2"), objects.Endpoint("10.244.2.2", notReady())),
			},
			want: []want{{Addr: "10.244.2.2:8080", Ready: true, Serving: true}},
		},
		{
			name: "same address on two target ports is two endpoints",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{
				slice("a-1", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2")),
				slice("a-2", "a", v4, tcp(8081), objects.Endpoint("10.244.2.2")),
			},
			want: []want{{Addr: "10.244.2.2:8080", Ready: true, Serving: true}, {Addr: "10.244.2.2:8081", Ready: true, Serving: true}},
		},
		{
			name: "FQDN slices ignored",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{
				slice("a-1", "a", discovery.AddressTypeFQDN, tcp(8080), objects.Endpoint("backend.example.com")),
				slice("a-2", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2")),
			},
			want: []want{{Addr: "10.244.2.2:8080", Ready: true, Serving: true}},
		},
		{
			name: "IPv6 slices serve the IPv6 port",
			svc:  svc("a", objects.ClusterIPs("10.96.0.1", "fd00:10:96::1")),
			slices: []*discovery.EndpointSlice{
				slice("a-4", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2")),
				slice("a-6", "a", v6, tcp(8080), objects.Endpoint("fd00:10:244:2::2")),
			},
			family: IPv6,
			want:   []want{{Addr: "[fd00:10:244:2::2]:8080", Ready: true, Serving: true}},
		},
		{
			name: "IPv4 slices serve the IPv4 port",
			svc:  svc("a", objects.ClusterIPs("10.96.0.1", "fd00:10:96::1")),
			slices: []*discovery.EndpointSlice{
				slice("a-4", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2")),
				slice("a-6", "a", v6, tcp(8080), objects.Endpoint("fd00:10:244:2::2")),
			},
			want: []want{{Addr: "10.244.2.2:8080", Ready: true, Serving: true}},
		},
		{
			name: "IPv6 slices do not serve an IPv4-only Service",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{
				slice("a-6", "a", v6, tcp(8080), objects.Endpoint("fd00:10:244:2::2")),
			},
		},
		{
			name: "port matched by name and protocol",
			svc:  svc("a", ports(objects.Port("dns", v1.ProtocolUDP, 53, 0), objects.Port("dns-tcp", v1.ProtocolTCP, 53, 0))),
			slices: []*discovery.EndpointSlice{slice("a-1", "a", v4,
				[]discovery.EndpointPort{
					objects.EndpointPort("dns", v1.ProtocolTCP, 5300),     // right name, wrong protocol
					objects.EndpointPort("dns-tcp", v1.ProtocolUDP, 5301), // right protocol for the other port, wrong name
					objects.EndpointPort("dns", v1.ProtocolUDP, 5353),
					objects.EndpointPort("", v1.ProtocolUDP, 5354),
				},
				objects.Endpoint("10.244.2.2"))},
			port: "dns", proto: v1.ProtocolUDP,
			want: []want{{Addr: "10.244.2.2:5353", Ready: true, Serving: true}},
		},
		{
			name: "slice port protocol unset means TCP",
			svc:  svc("a", ports(objects.Port("http", v1.ProtocolTCP, 80, 0))),
			slices: []*discovery.EndpointSlice{slice("a-1", "a", v4,
				[]discovery.EndpointPort{objects.EndpointPort("http", "", 8080)}, objects.Endpoint("10.244.2.2"))},
			port: "http",
			want: []want{{Addr: "10.244.2.2:8080", Ready: true, Serving: true}},
		},
		{
			name: "slice port without a number, endpoint without an address: skipped",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{
				slice("a-1", "a", v4, []discovery.EndpointPort{{Name: objects.Ptr("")}}, objects.Endpoint("10.244.2.2")),
				slice("a-2", "a", v4, tcp(8080), discovery.Endpoint{}, objects.Endpoint("10.244.2.3")),
			},
			want: []want{{Addr: "10.244.2.3:8080", Ready: true, Serving: true}},
		},
		{
			name: "only the first address of an endpoint",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{slice("a-1", "a", v4, tcp(8080),
				discovery.Endpoint{Addresses: []string{"10.244.2.2", "10.244.2.9"}})},
			want: []want{{Addr: "10.244.2.2:8080", Ready: true, Serving: true}},
		},
		{
			name: "slices of other Services, or of none, are not used",
			svc:  svc("a"),
			slices: []*discovery.EndpointSlice{
				slice("b-1", "b", v4, tcp(8080), objects.Endpoint("10.244.2.2")),
				func() *discovery.EndpointSlice {
					s := slice("a-x", "a", v4, tcp(8080), objects.Endpoint("10.244.2.3"))
					s.Labels = nil
					return s
				}(),
				func() *discovery.EndpointSlice {
					s := slice("a-1", "a", v4, tcp(8080), objects.Endpoint("10.244.2.4"))
					s.Namespace = "other"
					return s
				}(),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := build(t, []*v1.Service{tt.svc}, tt.slices...)
			f, proto := tt.family, tt.proto
			if f == 0 {
				f = IPv4
			}
			if proto == "" {
				proto = v1.ProtocolTCP
			}
			sp := p.Ports[key("a", tt.port, proto, f)]
			if sp == nil {
				t.Fatalf("no port %s", key("a", tt.port, proto, f))
			}
			var got []want
			for _, e := range sp.Inputs.Endpoints {
				got = append(got, want{
					Addr: e.Addr.String(), Node: e.NodeName, Zone: e.Zone,
					Ready: e.Ready, Serving: e.Serving, Terminating: e.Terminating, Local: e.Local,
					ForNodes: e.forNodes(), ForZones: e.forZones(),
				})
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("endpoints:\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

// TestEndpointSelection covers DESIGN §3 "Which endpoints": the endpoints of
// cluster traffic (ready, narrowed by topology, else serving+terminating
// without topology) and of local traffic (local ready, else local
// serving+terminating; no hints).
func TestEndpointSelection(t *testing.T) {
	tests := []struct {
		name     string
		svc      *v1.Service
		zone     string // this node's zone label; "zone-a" unless "-" (none)
		eps      []discovery.Endpoint
		cluster  []netip.AddrPort
		local    []netip.AddrPort
		topology string
	}{
		{
			name: "ready endpoints only",
			svc:  svc("a"),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.1.2", objects.OnNode("node1")),
				objects.Endpoint("10.244.2.2", notReady()),
				objects.Endpoint("10.244.2.3", termServing()),
				objects.Endpoint("10.244.2.4", termNotServing()),
				objects.Endpoint("10.244.2.5"),
			},
			cluster: aps("10.244.1.2:80", "10.244.2.5:80"),
		},
		{
			name: "no ready endpoint: serving and terminating ones",
			svc:  svc("a"),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.2.2", notReady()),
				objects.Endpoint("10.244.2.3", termServing()),
				objects.Endpoint("10.244.2.4", termNotServing()),
				objects.Endpoint("10.244.2.5", termServing()),
			},
			cluster: aps("10.244.2.3:80", "10.244.2.5:80"),
		},
		{
			name: "serving but not terminating is not a fallback",
			svc:  svc("a"),
			eps:  []discovery.Endpoint{objects.Endpoint("10.244.2.2", objects.Conditions(false, true, false))},
		},
		{
			name: "nothing serving: no endpoints",
			svc:  svc("a"),
			eps:  []discovery.Endpoint{objects.Endpoint("10.244.2.2", notReady()), objects.Endpoint("10.244.2.4", termNotServing())},
		},
		{
			name: "node hints: every ready endpoint has one, one names this node",
			svc:  svc("a"),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.1.2", objects.OnNode("node1"), objects.HintNodes("node1"), objects.HintZones("zone-a")),
				objects.Endpoint("10.244.2.2", objects.OnNode("node2"), objects.HintNodes("node2"), objects.HintZones("zone-a")),
				objects.Endpoint("10.244.2.3", objects.HintNodes("node1", "node3")),
				objects.Endpoint("10.244.2.4", notReady()),
			},
			cluster:  aps("10.244.1.2:80", "10.244.2.3:80"),
			topology: TopologySameNode,
		},
		{
			name: "node hints not naming this node: zone hints apply",
			svc:  svc("a"),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.2.2", objects.HintNodes("node2"), objects.HintZones("zone-a")),
				objects.Endpoint("10.244.2.3", objects.HintNodes("node3"), objects.HintZones("zone-b")),
			},
			cluster:  aps("10.244.2.2:80"),
			topology: TopologySameZone,
		},
		{
			name: "node hints missing on one ready endpoint: zone hints apply",
			svc:  svc("a"),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.1.2", objects.OnNode("node1"), objects.HintNodes("node1"), objects.HintZones("zone-a")),
				objects.Endpoint("10.244.2.2", objects.HintZones("zone-a")),
				objects.Endpoint("10.244.2.3", objects.HintZones("zone-b")),
			},
			cluster:  aps("10.244.1.2:80", "10.244.2.2:80"),
			topology: TopologySameZone,
		},
		{
			name:    "node hints without zone hints, none for this node: no narrowing",
			svc:     svc("a"),
			eps:     []discovery.Endpoint{objects.Endpoint("10.244.2.2", objects.HintNodes("node2")), objects.Endpoint("10.244.2.3", objects.HintNodes("node3"))},
			cluster: aps("10.244.2.2:80", "10.244.2.3:80"),
		},
		{
			name: "zone hints: every ready endpoint has one, one names this zone",
			svc:  svc("a"),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.1.2", objects.OnNode("node1"), objects.HintZones("zone-b")),
				objects.Endpoint("10.244.2.2", objects.HintZones("zone-a")),
				objects.Endpoint("10.244.2.3", objects.HintZones("zone-b", "zone-a")),
				objects.Endpoint("10.244.2.4", notReady()),
			},
			cluster:  aps("10.244.2.2:80", "10.244.2.3:80"),
			topology: TopologySameZone,
		},
		{
			name: "a ready endpoint without a zone hint disables narrowing",
			svc:  svc("a"),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.2.2", objects.HintZones("zone-a")),
				objects.Endpoint("10.244.2.3", objects.HintZones("zone-b")),
				objects.Endpoint("10.244.2.4"),
			},
			cluster: aps("10.244.2.2:80", "10.244.2.3:80", "10.244.2.4:80"),
		},
		{
			name: "a not-ready endpoint without a hint does not matter",
			svc:  svc("a"),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.2.2", objects.HintZones("zone-a")),
				objects.Endpoint("10.244.2.3", objects.HintZones("zone-b")),
				objects.Endpoint("10.244.2.4", termServing()),
			},
			cluster:  aps("10.244.2.2:80"),
			topology: TopologySameZone,
		},
		{
			name:    "hints naming other zones only: no narrowing",
			svc:     svc("a"),
			eps:     []discovery.Endpoint{objects.Endpoint("10.244.2.2", objects.HintZones("zone-b")), objects.Endpoint("10.244.2.3", objects.HintZones("zone-c"))},
			cluster: aps("10.244.2.2:80", "10.244.2.3:80"),
		},
		{
			name:    "node without a zone label: no zone narrowing",
			svc:     svc("a"),
			zone:    "-",
			eps:     []discovery.Endpoint{objects.Endpoint("10.244.2.2", objects.HintZones("zone-a")), objects.Endpoint("10.244.2.3", objects.HintZones("zone-b"))},
			cluster: aps("10.244.2.2:80", "10.244.2.3:80"),
		},
		{
			name:    "endpoint zone is not a hint",
			svc:     svc("a"),
			eps:     []discovery.Endpoint{objects.Endpoint("10.244.2.2", objects.InZone("zone-a")), objects.Endpoint("10.244.2.3", objects.InZone("zone-b"))},
			cluster: aps("10.244.2.2:80", "10.244.2.3:80"),
		},
		{
			name: "no ready endpoint: fallback ignores topology",
			svc:  svc("a"),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.2.2", termServing(), objects.HintZones("zone-a")),
				objects.Endpoint("10.244.2.3", termServing(), objects.HintZones("zone-b")),
				objects.Endpoint("10.244.2.4", termServing(), objects.HintNodes("node1")),
			},
			cluster: aps("10.244.2.2:80", "10.244.2.3:80", "10.244.2.4:80"),
		},
		{
			name:    "local endpoints not computed without a Local policy",
			svc:     svc("a", objects.NodePort(30080)),
			eps:     []discovery.Endpoint{objects.Endpoint("10.244.1.2", objects.OnNode("node1")), objects.Endpoint("10.244.2.2", objects.OnNode("node2"))},
			cluster: aps("10.244.1.2:80", "10.244.2.2:80"),
		},
		{
			name: "externalTrafficPolicy Local: local ready endpoints",
			svc:  svc("a", objects.NodePort(30080), objects.ExternalTrafficPolicyLocal(0)),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.1.2", objects.OnNode("node1")),
				objects.Endpoint("10.244.1.3", objects.OnNode("node1"), termServing()),
				objects.Endpoint("10.244.1.4", objects.OnNode("node1"), notReady()),
				objects.Endpoint("10.244.2.2", objects.OnNode("node2")),
			},
			cluster: aps("10.244.1.2:80", "10.244.2.2:80"),
			local:   aps("10.244.1.2:80"),
		},
		{
			name: "internalTrafficPolicy Local: local ready endpoints",
			svc:  svc("a", objects.InternalTrafficPolicyLocal()),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.1.2", objects.OnNode("node1")),
				objects.Endpoint("10.244.1.3", objects.OnNode("node1")),
				objects.Endpoint("10.244.2.2", objects.OnNode("node2")),
			},
			cluster: aps("10.244.1.2:80", "10.244.1.3:80", "10.244.2.2:80"),
			local:   aps("10.244.1.2:80", "10.244.1.3:80"),
		},
		{
			name: "no local ready endpoint: local serving and terminating ones, while cluster traffic has ready ones",
			svc:  svc("a", objects.InternalTrafficPolicyLocal()),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.1.2", objects.OnNode("node1"), termServing()),
				objects.Endpoint("10.244.1.3", objects.OnNode("node1"), termNotServing()),
				objects.Endpoint("10.244.1.4", objects.OnNode("node1"), notReady()),
				objects.Endpoint("10.244.2.2", objects.OnNode("node2")),
			},
			cluster: aps("10.244.2.2:80"),
			local:   aps("10.244.1.2:80"),
		},
		{
			name:    "Local policy, only remote endpoints",
			svc:     svc("a", objects.NodePort(30080), objects.ExternalTrafficPolicyLocal(0)),
			eps:     []discovery.Endpoint{objects.Endpoint("10.244.2.2", objects.OnNode("node2")), objects.Endpoint("10.244.2.3", objects.OnNode("node2"))},
			cluster: aps("10.244.2.2:80", "10.244.2.3:80"),
		},
		{
			name: "hints never apply to local endpoints",
			svc:  svc("a", objects.NodePort(30080), objects.ExternalTrafficPolicyLocal(0)),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.1.2", objects.OnNode("node1"), objects.HintZones("zone-b"), objects.HintNodes("node2")),
				objects.Endpoint("10.244.2.2", objects.OnNode("node2"), objects.HintZones("zone-a"), objects.HintNodes("node2")),
			},
			cluster:  aps("10.244.2.2:80"),
			local:    aps("10.244.1.2:80"),
			topology: TopologySameZone,
		},
		{
			name: "same-node hints narrow cluster traffic, local traffic keeps every local endpoint",
			svc:  svc("a", objects.InternalTrafficPolicyLocal()),
			eps: []discovery.Endpoint{
				objects.Endpoint("10.244.1.2", objects.OnNode("node1"), objects.HintNodes("node1")),
				objects.Endpoint("10.244.1.3", objects.OnNode("node1"), objects.HintNodes("node3")),
				objects.Endpoint("10.244.2.2", objects.OnNode("node2"), objects.HintNodes("node2")),
			},
			cluster:  aps("10.244.1.2:80"),
			local:    aps("10.244.1.2:80", "10.244.1.3:80"),
			topology: TopologySameNode,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			zone := "zone-a"
			if tt.zone == "-" {
				zone = ""
			}
			p, errs := Build(Input{
				Services: []*v1.Service{tt.svc},
				Slices:   []*discovery.EndpointSlice{slice("a-1", "a", v4, tcp(80), tt.eps...)},
				Node:     testNode(zone),
				Config:   testConfig,
			})
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			sp := onePort(t, p, "a", IPv4)
			if !reflect.DeepEqual(sp.ClusterEndpoints, tt.cluster) {
				t.Errorf("cluster endpoints: got %v, want %v", sp.ClusterEndpoints, tt.cluster)
			}
			if !reflect.DeepEqual(sp.LocalEndpoints, tt.local) {
				t.Errorf("local endpoints: got %v, want %v", sp.LocalEndpoints, tt.local)
			}
			if sp.Inputs.Topology != tt.topology {
				t.Errorf("topology: got %q, want %q", sp.Inputs.Topology, tt.topology)
			}
			if got, want := sp.Internal.Default.Action == Reject, len(tt.cluster) == 0; got != want {
				t.Errorf("rejected: got %v, want %v", got, want)
			}
		})
	}
}
