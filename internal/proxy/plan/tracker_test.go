package plan

import (
	"reflect"
	"sort"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

func changedKeys(ch Changes) []string {
	var out []string
	for k, v := range ch.Keys {
		if v {
			out = append(out, k.String())
		}
	}
	sort.Strings(out)
	return out
}

// trackerStep is one change to a tracker followed by a Sync.
type trackerStep struct {
	name   string
	do     func(t *Tracker)
	full   bool
	keys   []string // changed keys, sorted; nil for none
	absent []string // keys that must no longer be in the plan
}

// TestTrackerChanges covers the change set Sync reports: what a partial sync
// must render.
func TestTrackerChanges(t *testing.T) {
	a := svc("a", objects.ClusterIPs("10.96.0.1", "fd00:10:96::1"))
	b := svc("b", objects.ClusterIPs("10.96.0.2"), ports(objects.Port("http", v1.ProtocolTCP, 80, 0), objects.Port("dns", v1.ProtocolUDP, 53, 0)))
	aSlice := slice("a-1", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2", objects.HintZones("zone-b")), objects.Endpoint("10.244.2.3", objects.HintZones("zone-a")))
	bSlice := slice("b-1", "b", v4, []discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, 8080)}, objects.Endpoint("10.244.2.2"))
	aSlice2 := aSlice.DeepCopy()
	aSlice2.Endpoints = aSlice2.Endpoints[:1]
	bWithout := b.DeepCopy()
	bWithout.Spec.Ports = bWithout.Spec.Ports[:1]
	zoneB := testNode("zone-b")

	steps := []trackerStep{
		{
			name: "first sync is full",
			do: func(t *Tracker) {
				t.SetNode(testNode("zone-a"))
				t.SetService(a)
				t.SetService(b)
				t.SetSlice(aSlice)
				t.SetSlice(bSlice)
			},
			full: true,
			keys: []string{"ns/a/TCP IPv4", "ns/a/TCP IPv6", "ns/b:dns/UDP IPv4", "ns/b:http/TCP IPv4"},
		},
		{name: "nothing changed", do: func(t *Tracker) {}},
		{
			name: "unchanged re-Set reports no change",
			do: func(t *Tracker) {
				t.SetService(a.DeepCopy())
				t.SetSlice(aSlice.DeepCopy())
				t.SetSlice(bSlice.DeepCopy())
				t.SetNode(testNode("zone-a"))
			},
		},
		{
			name: "one slice updated: only its Service's changed ports",
			do:   func(t *Tracker) { t.SetSlice(aSlice2) },
			keys: []string{"ns/a/TCP IPv4"},
		},
		{
			name: "one port removed from a Service",
			do:   func(t *Tracker) { t.SetService(bWithout) },
			keys: []string{"ns/b:dns/UDP IPv4"}, absent: []string{"ns/b:dns/UDP IPv4"},
		},
		{
			name: "slice deleted",
			do:   func(t *Tracker) { t.DeleteSlice(aSlice2) },
			keys: []string{"ns/a/TCP IPv4"},
		},
		{
			name: "slice back",
			do:   func(t *Tracker) { t.SetSlice(aSlice) },
			keys: []string{"ns/a/TCP IPv4"},
		},
		{
			name: "Service deleted: its keys changed and gone",
			do:   func(t *Tracker) { t.DeleteService("ns", "a") },
			keys: []string{"ns/a/TCP IPv4", "ns/a/TCP IPv6"}, absent: []string{"ns/a/TCP IPv4", "ns/a/TCP IPv6"},
		},
		{
			name: "slice of a deleted Service: no change",
			do:   func(t *Tracker) { t.SetSlice(aSlice2) },
		},
		{
			name: "Service back, with its remembered slice",
			do:   func(t *Tracker) { t.SetService(a) },
			keys: []string{"ns/a/TCP IPv4", "ns/a/TCP IPv6"},
		},
		{
			name: "new zone: full",
			do:   func(t *Tracker) { t.SetNode(zoneB) },
			full: true,
			// a's only endpoint has a zone-b hint: now it narrows.
			keys: []string{"ns/a/TCP IPv4"},
		},
		{
			name: "MarkFull: full, nothing changed",
			do:   func(t *Tracker) { t.MarkFull() },
			full: true,
		},
		{
			name: "Service becomes ExternalName: its keys removed",
			do: func(t *Tracker) {
				en := b.DeepCopy()
				en.Spec.Type = v1.ServiceTypeExternalName
				t.SetService(en)
			},
			keys: []string{"ns/b:http/TCP IPv4"}, absent: []string{"ns/b:http/TCP IPv4"},
		},
		{
			name: "Service becomes invalid: its keys removed",
			do: func(t *Tracker) {
				bad := a.DeepCopy()
				bad.Spec.Ports[0].Port = 0
				t.SetService(bad)
			},
			keys: []string{"ns/a/TCP IPv4", "ns/a/TCP IPv6"}, absent: []string{"ns/a/TCP IPv4", "ns/a/TCP IPv6"},
		},
		{
			name: "Service valid again",
			do:   func(t *Tracker) { t.SetService(a) },
			keys: []string{"ns/a/TCP IPv4", "ns/a/TCP IPv6"},
		},
	}
	tr := NewTracker(testConfig)
	for _, st := range steps {
		st.do(tr)
		p, ch := tr.Sync()
		if ch.Full != st.full {
			t.Errorf("%s: full %v, want %v", st.name, ch.Full, st.full)
		}
		if got := changedKeys(ch); !reflect.DeepEqual(got, st.keys) {
			t.Errorf("%s: changed %q, want %q", st.name, got, st.keys)
		}
		for _, k := range st.absent {
			for pk := range p.Ports {
				if pk.String() == k {
					t.Errorf("%s: %s still in the plan", st.name, k)
				}
			}
		}
		// Whatever the path, the plan is the one a fresh build of the same
		// objects gives.
		assertSamePlan(t, st.name, p, rebuild(tr))
	}
}

// TestTrackerZoneChangeReplans checks that a new zone re-plans topology.
func TestTrackerZoneChangeReplans(t *testing.T) {
	tr := NewTracker(testConfig)
	tr.SetNode(testNode("zone-a"))
	tr.SetService(svc("a"))
	tr.SetSlice(slice("a-1", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2", objects.HintZones("zone-a")), objects.Endpoint("10.244.2.3", objects.HintZones("zone-b"))))
	p, _ := tr.Sync()
	sp := p.Ports[key("a", "", v1.ProtocolTCP, IPv4)]
	if want := aps("10.244.2.2:8080"); !reflect.DeepEqual(sp.ClusterEndpoints, want) {
		t.Fatalf("zone-a: %v, want %v", sp.ClusterEndpoints, want)
	}
	tr.SetNode(testNode("zone-b"))
	p, ch := tr.Sync()
	if !ch.Full || !reflect.DeepEqual(changedKeys(ch), []string{"ns/a/TCP IPv4"}) {
		t.Errorf("zone change: full=%v keys=%q, want full with ns/a/TCP IPv4", ch.Full, changedKeys(ch))
	}
	if p.Zone != "zone-b" {
		t.Errorf("plan zone %q", p.Zone)
	}
	sp = p.Ports[key("a", "", v1.ProtocolTCP, IPv4)]
	if want := aps("10.244.2.3:8080"); !reflect.DeepEqual(sp.ClusterEndpoints, want) {
		t.Errorf("zone-b: %v, want %v", sp.ClusterEndpoints, want)
	}
	tr.SetNode(nil)
	if _, ch := tr.Sync(); !ch.Full {
		t.Errorf("zone removed: not full")
	}
}

// TestTrackerSliceChangesOwner checks that an EndpointSlice whose
// service-name label changes (or goes) stops feeding its old Service.
func TestTrackerSliceChangesOwner(t *testing.T) {
	tr := NewTracker(testConfig)
	tr.SetService(svc("a"))
	tr.SetService(svc("b", objects.ClusterIPs("10.96.0.2")))
	s := slice("x", "a", v4, tcp(8080), objects.Endpoint("10.244.2.2"))
	tr.SetSlice(s)
	tr.Sync()

	moved := s.DeepCopy()
	moved.Labels[discovery.LabelServiceName] = "b"
	tr.SetSlice(moved)
	p, ch := tr.Sync()
	if got, want := changedKeys(ch), []string{"ns/a/TCP IPv4", "ns/b/TCP IPv4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("moved: changed %q, want %q", got, want)
	}
	if eps := p.Ports[key("a", "", v1.ProtocolTCP, IPv4)].ClusterEndpoints; eps != nil {
		t.Errorf("a still has %v", eps)
	}
	if eps := p.Ports[key("b", "", v1.ProtocolTCP, IPv4)].ClusterEndpoints; !reflect.DeepEqual(eps, aps("10.244.2.2:8080")) {
		t.Errorf("b has %v", eps)
	}
	assertSamePlan(t, "moved", p, rebuild(tr))

	orphan := moved.DeepCopy()
	delete(orphan.Labels, discovery.LabelServiceName)
	tr.SetSlice(orphan)
	p, ch = tr.Sync()
	if got, want := changedKeys(ch), []string{"ns/b/TCP IPv4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("orphaned: changed %q, want %q", got, want)
	}
	if eps := p.Ports[key("b", "", v1.ProtocolTCP, IPv4)].ClusterEndpoints; eps != nil {
		t.Errorf("b still has %v", eps)
	}
	assertSamePlan(t, "orphaned", p, rebuild(tr))

	// Deleting with the labels the slice had before still finds it.
	tr.SetSlice(moved)
	tr.Sync()
	tr.DeleteSlice(s)
	tr.DeleteSlice(nil)
	tr.DeleteSlice(slice("never-set", "b", v4, tcp(8080)))
	p, _ = tr.Sync()
	if eps := p.Ports[key("b", "", v1.ProtocolTCP, IPv4)].ClusterEndpoints; eps != nil {
		t.Errorf("deleted: b still has %v", eps)
	}
}

// TestTrackerErrors checks that errors follow the objects: reported while
// invalid, gone once fixed or deleted.
func TestTrackerErrors(t *testing.T) {
	tr := NewTracker(testConfig)
	bad := svc("a", objects.ExternalIPs("not-an-ip"))
	tr.SetService(bad)
	tr.Sync()
	if errs := tr.Errors(); len(errs) != 1 {
		t.Fatalf("errors %v, want 1", errs)
	}
	tr.SetService(svc("a"))
	tr.Sync()
	if errs := tr.Errors(); len(errs) != 0 {
		t.Errorf("fixed: errors %v", errs)
	}
	tr.SetService(bad)
	tr.Sync()
	tr.DeleteService("ns", "a")
	tr.Sync()
	if errs := tr.Errors(); len(errs) != 0 {
		t.Errorf("deleted: errors %v", errs)
	}
}

// rebuild plans the tracker's current objects from scratch.
func rebuild(tr *Tracker) *Plan {
	in := Input{Config: tr.cfg, Node: testNode(tr.node.zone)}
	for _, s := range tr.services {
		in.Services = append(in.Services, s)
	}
	for nn := range tr.slices {
		in.Slices = append(in.Slices, tr.sliceList(nn)...)
	}
	p, _ := Build(in)
	return p
}

func assertSamePlan(t *testing.T, step string, got, want *Plan) {
	t.Helper()
	if len(got.Ports) != len(want.Ports) {
		t.Errorf("%s: %d ports, a fresh build has %d", step, len(got.Ports), len(want.Ports))
	}
	for k, sp := range want.Ports {
		if !reflect.DeepEqual(got.Ports[k], sp) {
			t.Errorf("%s: %s differs from a fresh build:\n got  %+v\n want %+v", step, k, got.Ports[k], sp)
		}
	}
}

// TestTrackerRemovedPorts: a deleted Service's ports come back in
// Changes.Removed with their last plan, for cleanups that need addresses.
func TestTrackerRemovedPorts(t *testing.T) {
	tr := NewTracker(testConfig)
	tr.SetService(svc("a"))
	tr.Sync()
	tr.DeleteService("ns", "a")
	_, ch := tr.Sync()
	if len(ch.Removed) != 1 {
		t.Fatalf("Removed = %v, want the one port of a", ch.Removed)
	}
	for k, sp := range ch.Removed {
		if !ch.Keys[k] || sp == nil || sp.Name != "a" || !sp.ClusterIP.IsValid() {
			t.Errorf("Removed[%s] = %+v, want a's last plan, also in Keys", k, sp)
		}
	}
	if _, ch := tr.Sync(); len(ch.Removed) != 0 {
		t.Errorf("Removed = %v on a sync with no change", ch.Removed)
	}
}
