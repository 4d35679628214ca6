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

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
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
	typ := v1.ServiceType(w.pick("ClusterIP", "NodePort", "LoadBalancer"))
	ips := []string{fmt.Sprintf("10.96.0.%d", 10+i)}
	if w.rng.Intn(2) == 0 {
		ips = append(ips, fmt.Sprintf("fd00:10:96::%x", 10+i))
	}
	nodePort := func(j int32) int32 { // port j's node port, if the type has them
		if typ == v1.ServiceTypeClusterIP {
			return 0
		}
		return int32(30000+2*i) + j
	}
	opts := []objects.ServiceOption{
		objects.Type(typ), objects.ClusterIPs(ips...), objects.Port("http", v1.ProtocolTCP, 80, nodePort(0)),
	}
	if w.rng.Intn(2) == 0 {
		opts = append(opts, objects.Port("dns", v1.ProtocolUDP, 53, nodePort(1)))
	}
	if typ != v1.ServiceTypeClusterIP {
		etp := objects.ExternalTrafficPolicyCluster()
		if w.pick("Cluster", "Local") == "Local" {
			etp = objects.ExternalTrafficPolicyLocal(0)
		}
		opts = append(opts, etp)
	}
	if w.rng.Intn(3) == 0 {
		opts = append(opts, objects.InternalTrafficPolicyLocal())
	}
	if w.rng.Intn(3) == 0 {
		opts = append(opts, objects.Affinity(int32(60+w.rng.Intn(3))))
	}
	if w.rng.Intn(3) == 0 {
		opts = append(opts, objects.ExternalIPs(w.pick(fmt.Sprintf("203.0.113.%d", 100+i), "203.0.113.1", "2001:db8:2::1")))
	}
	if typ == v1.ServiceTypeLoadBalancer {
		opts = append(opts, objects.LoadBalancerIngress(fmt.Sprintf("203.0.113.%d", 10+i), ""))
		if w.rng.Intn(2) == 0 {
			opts = append(opts, objects.SourceRanges(w.pick("198.51.100.0/24", "192.0.2.0/24", "10.0.0.0/8")))
		}
	}
	return objects.Service("ns", fmt.Sprintf("svc%d", i), opts...)
}

// randomSlice builds an EndpointSlice of Service i in one family with
// random endpoints, conditions and hints.
func (w *world) randomSlice(i int, f plan.Family) *discovery.EndpointSlice {
	typ := discovery.AddressTypeIPv4
	if f == plan.IPv6 {
		typ = discovery.AddressTypeIPv6
	}
	ports := []discovery.EndpointPort{
		objects.EndpointPort("http", v1.ProtocolTCP, 8080),
		objects.EndpointPort("dns", v1.ProtocolUDP, 8080),
	}
	pods := testPodIPs(f)
	hinted := w.rng.Intn(3) == 0
	var eps []discovery.Endpoint
	for _, ip := range pods {
		if w.rng.Intn(2) == 0 {
			continue
		}
		node := "node1"
		if strings.Contains(ip.String(), ".2.") || strings.Contains(ip.String(), ":2::") {
			node = "node2"
		}
		opts := []objects.EndpointOption{objects.OnNode(node)}
		switch w.rng.Intn(4) {
		case 0:
			opts = append(opts, objects.Conditions(false, true, true))
		case 1:
			opts = append(opts, objects.Ready(false))
		default:
			opts = append(opts, objects.Ready(true))
		}
		if hinted {
			opts = append(opts, objects.HintZones(w.pick("zone-a", "zone-b")))
		}
		eps = append(eps, objects.Endpoint(ip.String(), opts...))
	}
	return objects.Slice("ns", sliceName(i, f), fmt.Sprintf("svc%d", i), typ, ports, eps...)
}

// sliceName names Service i's EndpointSlice of family f as the API would
// accept it (a DNS subdomain: lower case).
func sliceName(i int, f plan.Family) string {
	return fmt.Sprintf("svc%d-%s", i, strings.ToLower(f.String()))
}

// step applies one random change to the world and to the tracker.
func (w *world) step(t *plan.Tracker) {
	i := w.rng.Intn(worldServices)
	f := plan.Families[w.rng.Intn(2)]
	name := sliceName(i, f)
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

// syncValid is the tracker's Sync, failing the test if the plan left any
// of the random world's objects out: a world the API would refuse tests
// nothing.
func syncValid(t *testing.T, tr *plan.Tracker) (*plan.Plan, plan.Changes) {
	t.Helper()
	p, ch := tr.Sync()
	if errs := tr.Errors(); len(errs) > 0 {
		t.Fatalf("the random world made objects the plan refuses: %v", errs)
	}
	return p, ch
}

func (w *world) node() *v1.Node { return objects.Node("node1", w.zone) }

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
				p, ch := syncValid(t, tr)
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
