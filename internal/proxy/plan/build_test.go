package plan

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

func key(name, port string, proto v1.Protocol, f Family) Key {
	return Key{ServicePortName: ServicePortName{Namespace: testNS, Name: name, Port: port, Protocol: proto}, Family: f}
}

// addressesOf is a port without its endpoints and the outcomes they lead
// to: what "which Services" and "which addresses" decide.
func addressesOf(sp *ServicePort) ServicePort {
	c := *sp
	c.ClusterEndpoints, c.LocalEndpoints, c.Internal, c.External, c.Hairpin, c.Live = nil, nil, Route{}, Route{}, nil, nil
	c.Inputs.Endpoints, c.Inputs.Topology, c.HealthCheck.LocalEndpoints = nil, "", nil
	return c
}

func showPort(sp ServicePort) string {
	return fmt.Sprintf("%s clusterIP=%v port=%d nodePort=%d externalIPs=%v lbIPs=%v firewall=%v itpLocal=%v etpLocal=%v hcnp=%d affinity=%d",
		sp.Key, sp.ClusterIP, sp.Port, sp.NodePort, sp.ExternalIPs, sp.LoadBalancerIPs, sp.Firewall,
		sp.Inputs.InternalLocal, sp.Inputs.ExternalLocal, sp.HealthCheck.NodePort, sp.AffinitySeconds)
}

// allow is the firewall admitting these prefixes and dropping the rest.
func allow(ps ...string) Firewall { return Firewall{Allow: prefixes(ps...), Outside: Drop} }

// TestWhichServices covers DESIGN §3 "Which Services": which Services and
// families get ports, and which addresses each port has.
func TestWhichServices(t *testing.T) {
	v4 := func(name string) ServicePort {
		return ServicePort{Key: key(name, "", v1.ProtocolTCP, IPv4), ClusterIP: netip.MustParseAddr("10.96.0.1"), Port: 80}
	}
	with := func(sp ServicePort, change func(*ServicePort)) ServicePort {
		change(&sp)
		return sp
	}
	tests := []struct {
		name string
		svc  *v1.Service
		want []ServicePort // sorted by key
	}{
		{name: "plain ClusterIP", svc: svc("a"), want: []ServicePort{v4("a")}},
		{name: "ExternalName skipped", svc: svc("a", objects.Type(v1.ServiceTypeExternalName), objects.ClusterIPs("10.96.0.1"))},
		{name: "headless skipped", svc: svc("a", objects.ClusterIPs("None"))},
		{name: "no clusterIP skipped", svc: svc("a", func(s *v1.Service) { s.Spec.ClusterIP = "" })},
		{name: "service-proxy-name label skipped", svc: svc("a", objects.Label(LabelServiceProxyName, "other-proxy"))},
		{name: "service-proxy-name label skipped even empty", svc: svc("a", objects.Label(LabelServiceProxyName, ""))},
		{name: "headless label skipped", svc: svc("a", objects.Label(LabelHeadless, ""))},
		{name: "other labels kept", svc: svc("a", objects.Label("app", "web")), want: []ServicePort{v4("a")}},
		{
			name: "IPv6 single-stack",
			svc:  svc("a", objects.ClusterIPs("fd00:10:96::1")),
			want: []ServicePort{{Key: key("a", "", v1.ProtocolTCP, IPv6), ClusterIP: netip.MustParseAddr("fd00:10:96::1"), Port: 80}},
		},
		{
			name: "dual-stack: one port per family",
			svc:  svc("a", objects.ClusterIPs("fd00:10:96::1", "10.96.0.1")),
			want: []ServicePort{
				v4("a"),
				{Key: key("a", "", v1.ProtocolTCP, IPv6), ClusterIP: netip.MustParseAddr("fd00:10:96::1"), Port: 80},
			},
		},
		{
			name: "clusterIP without clusterIPs",
			svc:  svc("a", func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.0.1", nil }),
			want: []ServicePort{v4("a")},
		},
		{
			name: "multi-port, protocol defaults to TCP",
			svc: svc("a", ports(objects.Port("http", v1.ProtocolTCP, 80, 0), objects.Port("dns", v1.ProtocolUDP, 53, 0),
				objects.Port("other", "", 81, 0), objects.Port("sctp", v1.ProtocolSCTP, 9, 0))),
			want: []ServicePort{
				with(v4("a"), func(sp *ServicePort) { sp.Key, sp.Port = key("a", "dns", v1.ProtocolUDP, IPv4), 53 }),
				with(v4("a"), func(sp *ServicePort) { sp.Key, sp.Port = key("a", "http", v1.ProtocolTCP, IPv4), 80 }),
				with(v4("a"), func(sp *ServicePort) { sp.Key, sp.Port = key("a", "other", v1.ProtocolTCP, IPv4), 81 }),
				with(v4("a"), func(sp *ServicePort) { sp.Key, sp.Port = key("a", "sctp", v1.ProtocolSCTP, IPv4), 9 }),
			},
		},
		{
			name: "NodePort",
			svc:  svc("a", objects.NodePort(30080)),
			want: []ServicePort{with(v4("a"), func(sp *ServicePort) { sp.NodePort = 30080 })},
		},
		{
			name: "LoadBalancer with nodePort 0: no NodePort, LB IP kept",
			svc:  svc("a", objects.LoadBalancerIngress("203.0.113.1", ""), objects.NodePort(0)),
			want: []ServicePort{with(v4("a"), func(sp *ServicePort) { sp.LoadBalancerIPs = addrList("203.0.113.1") })},
		},
		{
			name: "LB ingress: ipMode unset and VIP kept, Proxy and hostname-only skipped, per family",
			svc: svc("a", objects.ClusterIPs("10.96.0.1", "fd00:10:96::1"), objects.NodePort(30080),
				objects.LoadBalancerIngress("203.0.113.1", ""), objects.LoadBalancerIngress("203.0.113.2", v1.LoadBalancerIPModeVIP),
				objects.LoadBalancerIngress("203.0.113.3", v1.LoadBalancerIPModeProxy), objects.LoadBalancerIngress("", ""),
				objects.LoadBalancerIngress("2001:db8:2::1", v1.LoadBalancerIPModeVIP), objects.LoadBalancerIngress("2001:db8:2::2", v1.LoadBalancerIPModeProxy),
				func(s *v1.Service) {
					s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{Hostname: "lb.example.com"})
				}),
			want: []ServicePort{
				with(v4("a"), func(sp *ServicePort) {
					sp.NodePort, sp.LoadBalancerIPs = 30080, addrList("203.0.113.1", "203.0.113.2")
				}),
				{
					Key: key("a", "", v1.ProtocolTCP, IPv6), ClusterIP: netip.MustParseAddr("fd00:10:96::1"), Port: 80,
					NodePort: 30080, LoadBalancerIPs: addrList("2001:db8:2::1"),
				},
			},
		},
		{
			name: "LB IPs of the other family only",
			svc:  svc("a", objects.LoadBalancerIngress("2001:db8:2::1", "")),
			want: []ServicePort{v4("a")},
		},
		{
			name: "externalIPs per family",
			svc: svc("a", objects.ClusterIPs("10.96.0.1", "fd00:10:96::1"),
				objects.ExternalIPs("203.0.113.5", "2001:db8:2::5", "203.0.113.6", "::ffff:203.0.113.7")),
			want: []ServicePort{
				with(v4("a"), func(sp *ServicePort) { sp.ExternalIPs = addrList("203.0.113.5", "203.0.113.6", "203.0.113.7") }),
				{
					Key: key("a", "", v1.ProtocolTCP, IPv6), ClusterIP: netip.MustParseAddr("fd00:10:96::1"), Port: 80,
					ExternalIPs: addrList("2001:db8:2::5"),
				},
			},
		},
		{
			// The ranges hold the node's IPs (198.51.100.1, 2001:db8:1::1),
			// so the LB IPs are admitted too: see the next case.
			name: "loadBalancerSourceRanges parsed with whitespace, masked, per family",
			svc: svc("a", objects.ClusterIPs("10.96.0.1", "fd00:10:96::1"), objects.LoadBalancerIngress("203.0.113.1", ""), objects.LoadBalancerIngress("2001:db8:2::1", ""),
				objects.SourceRanges(" 198.51.100.0/24", "10.1.2.3/8 ", "\t2001:db8:1::/48\n", "192.0.2.7/32")),
			want: []ServicePort{
				with(v4("a"), func(sp *ServicePort) {
					sp.LoadBalancerIPs = addrList("203.0.113.1")
					sp.Firewall = allow("198.51.100.0/24", "10.0.0.0/8", "192.0.2.7/32", "203.0.113.1/32")
				}),
				{
					Key: key("a", "", v1.ProtocolTCP, IPv6), ClusterIP: netip.MustParseAddr("fd00:10:96::1"), Port: 80,
					LoadBalancerIPs: addrList("2001:db8:2::1"), Firewall: allow("2001:db8:1::/48", "2001:db8:2::1/128"),
				},
			},
		},
		{
			name: "source ranges admitting the node admit its LB IPs, others do not",
			svc: svc("a", objects.ClusterIPs("10.96.0.1", "fd00:10:96::1"), objects.LoadBalancerIngress("203.0.113.1", ""), objects.LoadBalancerIngress("2001:db8:2::1", ""),
				objects.SourceRanges("198.51.100.1/32", "2001:db8:9::/48")),
			want: []ServicePort{
				with(v4("a"), func(sp *ServicePort) {
					sp.LoadBalancerIPs = addrList("203.0.113.1")
					sp.Firewall = allow("198.51.100.1/32", "203.0.113.1/32")
				}),
				{
					Key: key("a", "", v1.ProtocolTCP, IPv6), ClusterIP: netip.MustParseAddr("fd00:10:96::1"), Port: 80,
					LoadBalancerIPs: addrList("2001:db8:2::1"), Firewall: allow("2001:db8:9::/48"),
				},
			},
		},
		{
			name: "IPv4-mapped source range belongs to IPv4",
			svc:  svc("a", objects.LoadBalancerIngress("203.0.113.1", ""), objects.SourceRanges("::ffff:198.51.100.0/120")),
			want: []ServicePort{with(v4("a"), func(sp *ServicePort) {
				sp.LoadBalancerIPs = addrList("203.0.113.1")
				sp.Firewall = allow("198.51.100.0/24", "203.0.113.1/32")
			})},
		},
		{
			name: "externalTrafficPolicy Local with a NodePort, health check node port",
			svc:  svc("a", objects.NodePort(30080), objects.ExternalTrafficPolicyLocal(32000)),
			want: []ServicePort{with(v4("a"), func(sp *ServicePort) {
				sp.NodePort, sp.Inputs.ExternalLocal, sp.HealthCheck.NodePort = 30080, true, 32000
			})},
		},
		{
			name: "externalTrafficPolicy Local without external addresses means nothing",
			svc:  svc("a", objects.ExternalTrafficPolicyLocal(0)),
			want: []ServicePort{v4("a")},
		},
		{
			name: "internalTrafficPolicy Local",
			svc:  svc("a", objects.InternalTrafficPolicyLocal()),
			want: []ServicePort{with(v4("a"), func(sp *ServicePort) { sp.Inputs.InternalLocal = true })},
		},
		{
			name: "internalTrafficPolicy Cluster",
			svc: svc("a", func(s *v1.Service) {
				p := v1.ServiceInternalTrafficPolicyCluster
				s.Spec.InternalTrafficPolicy = &p
			}),
			want: []ServicePort{v4("a")},
		},
		{
			name: "affinity ClientIP default timeout",
			svc:  svc("a", objects.Affinity(0)),
			want: []ServicePort{with(v4("a"), func(sp *ServicePort) { sp.AffinitySeconds = 10800 })},
		},
		{
			name: "affinity ClientIP with an empty config",
			svc: svc("a", objects.Affinity(0), func(s *v1.Service) {
				s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{}}
			}),
			want: []ServicePort{with(v4("a"), func(sp *ServicePort) { sp.AffinitySeconds = 10800 })},
		},
		{
			name: "affinity ClientIP custom timeout",
			svc:  svc("a", objects.Affinity(600)),
			want: []ServicePort{with(v4("a"), func(sp *ServicePort) { sp.AffinitySeconds = 600 })},
		},
		{
			name: "affinity None ignores the config",
			svc:  svc("a", objects.Affinity(600), func(s *v1.Service) { s.Spec.SessionAffinity = v1.ServiceAffinityNone }),
			want: []ServicePort{v4("a")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := build(t, []*v1.Service{tt.svc})
			var got []string
			for _, sp := range portsOf(p, "a") {
				got = append(got, showPort(addressesOf(sp)))
				if p.Ports[sp.Key] != sp {
					t.Errorf("%s: not indexed by its key", sp.Key)
				}
			}
			var want []string
			for _, sp := range tt.want {
				want = append(want, showPort(sp))
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("ports:\n got  %s\n want %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
			}
			for i, sp := range portsOf(p, "a") {
				if i < len(tt.want) && !reflect.DeepEqual(addressesOf(sp), tt.want[i]) {
					t.Errorf("port %s differs from want beyond its printed fields:\n got  %#v\n want %#v", sp.Key, addressesOf(sp), tt.want[i])
				}
			}
		})
	}
}

// TestServicesPlannedTogether checks that skipped Services do not disturb
// the others in the same input.
func TestServicesPlannedTogether(t *testing.T) {
	p := build(t, []*v1.Service{
		svc("a"),
		svc("b", objects.Type(v1.ServiceTypeExternalName), objects.ClusterIPs("10.96.0.2")),
		svc("c", objects.ClusterIPs("10.96.0.3", "fd00:10:96::3")),
		svc("d", namespace("other"), objects.ClusterIPs("10.96.0.4")),
	})
	var got []string
	for _, f := range Families {
		for _, sp := range p.PortsOf(f) {
			got = append(got, sp.Key.String())
		}
	}
	want := []string{"ns/a/TCP IPv4", "ns/c/TCP IPv4", "other/d/TCP IPv4", "ns/c/TCP IPv6"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keys: got %q, want %q", got, want)
	}
	if len(p.Ports) != 4 {
		t.Errorf("%d ports, want 4", len(p.Ports))
	}
	if p.Zone != "zone-a" {
		t.Errorf("zone %q, want zone-a", p.Zone)
	}
}

func TestServicePortNameString(t *testing.T) {
	for _, tt := range []struct {
		k    Key
		name string
		str  string
	}{
		{key("a", "", v1.ProtocolTCP, IPv4), "ns/a", "ns/a/TCP IPv4"},
		{key("a", "http", v1.ProtocolUDP, IPv6), "ns/a:http", "ns/a:http/UDP IPv6"},
	} {
		if got := tt.k.ServicePortName.String(); got != tt.name {
			t.Errorf("ServicePortName %q, want %q", got, tt.name)
		}
		if got := tt.k.String(); got != tt.str {
			t.Errorf("Key %q, want %q", got, tt.str)
		}
	}
}

func TestKeyLess(t *testing.T) {
	ordered := []Key{
		{ServicePortName: ServicePortName{Namespace: "a", Name: "z"}},
		{ServicePortName: ServicePortName{Namespace: "b", Name: "a"}},
		key("a", "", v1.ProtocolTCP, IPv4),
		key("a", "dns", v1.ProtocolTCP, IPv4),
		key("a", "dns", v1.ProtocolUDP, IPv4),
		key("a", "dns", v1.ProtocolUDP, IPv6),
		key("b", "", v1.ProtocolTCP, IPv4),
	}
	for i := range ordered {
		for j := range ordered {
			if got, want := ordered[i].Less(ordered[j]), i < j; got != want {
				t.Errorf("%s < %s: %v, want %v", ordered[i], ordered[j], got, want)
			}
		}
	}
}
