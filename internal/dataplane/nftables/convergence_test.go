package nftables

import (
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/plan"
)

// world is a random set of Services and EndpointSlices that a test mutates.
type world struct {
	rng      *rand.Rand
	services map[string]*v1.Service
	slices   map[string]*discovery.EndpointSlice
	zone     string
}

const worldServices = 8

func newWorld(seed int64) *world {
	return &world{rng: rand.New(rand.NewSource(seed)), services: map[string]*v1.Service{}, slices: map[string]*discovery.EndpointSlice{}, zone: "zone-a"}
}

func (w *world) pick(options ...string) string { return options[w.rng.Intn(len(options))] }

// randomService builds Service i with random type, policies and addresses.
// Its addresses are fixed per i, except one external IP that several
// Services may claim at once, to exercise conflicting claims.
func (w *world) randomService(i int) *v1.Service {
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("svc%d", i)}}
	s := &svc.Spec
	s.Type = v1.ServiceType(w.pick("ClusterIP", "NodePort", "LoadBalancer"))
	s.ClusterIP = fmt.Sprintf("10.96.0.%d", 10+i)
	s.ClusterIPs = []string{s.ClusterIP}
	if w.rng.Intn(2) == 0 {
		s.ClusterIPs = append(s.ClusterIPs, fmt.Sprintf("fd00:10:96::%x", 10+i))
	}
	s.Ports = []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}
	if w.rng.Intn(2) == 0 {
		s.Ports = append(s.Ports, v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53})
	}
	if s.Type != v1.ServiceTypeClusterIP {
		for j := range s.Ports {
			s.Ports[j].NodePort = int32(30000 + 2*i + j)
		}
		s.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicy(w.pick("Cluster", "Local"))
	}
	if w.rng.Intn(3) == 0 {
		itp := v1.ServiceInternalTrafficPolicyLocal
		s.InternalTrafficPolicy = &itp
	}
	if w.rng.Intn(3) == 0 {
		s.SessionAffinity = v1.ServiceAffinityClientIP
		t := int32(60 + w.rng.Intn(3))
		s.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &t}}
	}
	if w.rng.Intn(3) == 0 {
		s.ExternalIPs = []string{w.pick(fmt.Sprintf("203.0.113.%d", 100+i), "203.0.113.1", "2001:db8:2::1")}
	}
	if s.Type == v1.ServiceTypeLoadBalancer {
		svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: fmt.Sprintf("203.0.113.%d", 10+i)}}
		if w.rng.Intn(2) == 0 {
			s.LoadBalancerSourceRanges = []string{w.pick("198.51.100.0/24", "192.0.2.0/24", "10.0.0.0/8")}
		}
	}
	return svc
}

// randomSlice builds an EndpointSlice of Service i in one family with
// random endpoints, conditions and hints.
func (w *world) randomSlice(i int, f plan.Family) *discovery.EndpointSlice {
	typ := discovery.AddressTypeIPv4
	if f == plan.IPv6 {
		typ = discovery.AddressTypeIPv6
	}
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("svc%d-%s", i, f), Labels: map[string]string{discovery.LabelServiceName: fmt.Sprintf("svc%d", i)}},
		AddressType: typ,
	}
	for _, name := range []string{"http", "dns"} {
		proto := v1.ProtocolTCP
		if name == "dns" {
			proto = v1.ProtocolUDP
		}
		s.Ports = append(s.Ports, discovery.EndpointPort{Name: ptr(name), Protocol: &proto, Port: ptr(int32(8080))})
	}
	pods := testPodIPs(f)
	hinted := w.rng.Intn(3) == 0
	for _, ip := range pods {
		if w.rng.Intn(2) == 0 {
			continue
		}
		node := "node1"
		if strings.Contains(ip.String(), ".2.") || strings.Contains(ip.String(), ":2::") {
			node = "node2"
		}
		ep := discovery.Endpoint{Addresses: []string{ip.String()}, NodeName: ptr(node)}
		switch w.rng.Intn(4) {
		case 0:
			ep.Conditions = discovery.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}
		case 1:
			ep.Conditions = discovery.EndpointConditions{Ready: ptr(false)}
		default:
			ep.Conditions = discovery.EndpointConditions{Ready: ptr(true)}
		}
		if hinted {
			ep.Hints = &discovery.EndpointHints{ForZones: []discovery.ForZone{{Name: w.pick("zone-a", "zone-b")}}}
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

// step applies one random change to the world and to the tracker.
func (w *world) step(t *plan.Tracker) {
	i := w.rng.Intn(worldServices)
	f := plan.Families[w.rng.Intn(2)]
	name := fmt.Sprintf("svc%d-%s", i, f)
	switch n := w.rng.Intn(20); {
	case n < 6:
		svc := w.randomService(i)
		w.services[svc.Name] = svc
		t.SetService(svc)
	case n < 8:
		delete(w.services, fmt.Sprintf("svc%d", i))
		t.DeleteService("ns", fmt.Sprintf("svc%d", i))
	case n < 17:
		s := w.randomSlice(i, f)
		w.slices[name] = s
		t.SetSlice(s)
	case n < 19:
		if s := w.slices[name]; s != nil {
			delete(w.slices, name)
			t.DeleteSlice(s)
		}
	default:
		w.zone = w.pick("zone-a", "zone-b")
		t.SetNode(w.node())
	}
}

func (w *world) node() *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{v1.LabelTopologyZone: w.zone}}}
}

func (w *world) input(cfg plan.Config) plan.Input {
	in := plan.Input{Node: w.node(), Config: cfg}
	for _, s := range w.services {
		in.Services = append(in.Services, s)
	}
	for _, s := range w.slices {
		in.Slices = append(in.Slices, s)
	}
	return in
}

func testConfig() plan.Config {
	return plan.Config{
		NodeName:     "node1",
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")},
		NodeIPs:      []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:1::1")},
	}
}

// TestConvergence drives random sequences of changes through partial syncs
// and checks, along the way and at the end, that the table is exactly what
// one full sync of the same state writes.
func TestConvergence(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			w := newWorld(seed)
			cfg := testConfig()
			tr := plan.NewTracker(cfg)
			tr.SetNode(w.node())
			fd := newFakeDataplane()
			for i := 0; i < 150; i++ {
				w.step(tr)
				p, ch := tr.Sync()
				fd.mustSync(t, p, ch)
				if i%25 != 24 {
					continue
				}
				fresh, _ := plan.Build(w.input(cfg))
				if !reflect.DeepEqual(p.Ports, fresh.Ports) {
					t.Fatalf("step %d: tracker's plan differs from a fresh build", i)
				}
				if got, want := sameGeneration(fd.dump()), sameGeneration(fullSyncDump(t, fresh)); got != want {
					t.Fatalf("step %d: partial syncs diverged from a full sync:\n%s", i, lineDiff(got, want))
				}
			}
		})
	}
}

// lineDiff lists the lines only in a and only in b.
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range ma {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range mb {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

func testPodIPs(f plan.Family) []netip.Addr {
	var out []netip.Addr
	for _, s := range []string{"10.244.1.2", "10.244.1.3", "10.244.2.2", "10.244.2.3", "fd00:10:244:1::2", "fd00:10:244:1::3", "fd00:10:244:2::2", "fd00:10:244:2::3"} {
		if a := netip.MustParseAddr(s); plan.FamilyOf(a) == f {
			out = append(out, a)
		}
	}
	return out
}
