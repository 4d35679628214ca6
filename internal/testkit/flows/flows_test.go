package flows

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// TestPlan runs every flow against the plan of the fixture, for a
// dataplane that expresses every scheduler, some, and none.
func TestPlan(t *testing.T) {
	for _, caps := range []plan.Capabilities{
		{Dataplane: "every", Schedulers: plan.Schedulers},
		{Dataplane: "some", Schedulers: []string{"rr", "sh"}},
		{Dataplane: "none"},
	} {
		p, errs := plan.Build(FixtureFor(caps))
		for _, err := range errs {
			t.Errorf("fixture: %v", err)
		}
		for _, f := range FlowsFor(caps) {
			t.Run(caps.Dataplane+"/"+f.Name, func(t *testing.T) {
				Check(t, f, p.Decide(f.Pkt))
			})
		}
	}
}

// TestTable checks the table itself: enough flows, unique names, each well
// formed, and every kind of verdict present.
func TestTable(t *testing.T) {
	fl := Flows()
	if len(fl) < 45 {
		t.Errorf("%d flows, want at least 45", len(fl))
	}
	names := map[string]bool{}
	actions := map[plan.Action]int{}
	masq := map[Masq]int{}
	var v6, udp, host, affinity int
	schedulers := map[string]int{}
	for _, f := range fl {
		if names[f.Name] {
			t.Errorf("duplicate flow name %q", f.Name)
		}
		names[f.Name] = true
		if err := f.Validate(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		actions[f.Want.Action]++
		if f.Want.Action == plan.Forward {
			masq[f.Want.Masquerade]++
		}
		if f.Pkt.Src.Is6() {
			v6++
		}
		if f.Pkt.Protocol == "UDP" {
			udp++
		}
		if f.Pkt.FromHost {
			host++
		}
		if f.Want.AffinitySeconds != 0 {
			affinity++
		}
		schedulers[f.Want.Scheduler]++
	}
	for _, s := range []string{"rr", "sh", "lc"} {
		if schedulers[s] == 0 {
			t.Errorf("no flow with scheduler %s", s)
		}
	}
	for _, caps := range []plan.Capabilities{{}, {Schedulers: []string{"rr"}}} {
		for _, f := range FlowsFor(caps) {
			if s := f.Want.Scheduler; s != "" && !caps.Expresses(s) {
				t.Errorf("FlowsFor(%v): %s keeps scheduler %s", caps.Schedulers, f, s)
			}
		}
	}
	for _, a := range []plan.Action{plan.Forward, plan.Reject, plan.Drop, plan.Pass} {
		if actions[a] == 0 {
			t.Errorf("no %s flow", a)
		}
	}
	for _, m := range []Masq{MasqNone, MasqAll, MasqHairpin} {
		if masq[m] == 0 {
			t.Errorf("no forward flow with masquerade %s", m)
		}
	}
	if v6 == 0 || udp == 0 || host == 0 || affinity == 0 {
		t.Errorf("IPv6 %d, UDP %d, host %d, affinity %d flows: want some of each", v6, udp, host, affinity)
	}
}

// TestFixtureIsFresh checks that each Fixture call returns new objects.
func TestFixtureIsFresh(t *testing.T) {
	a, b := Fixture(), Fixture()
	a.Services[0].Name = "changed"
	a.Slices[0].Endpoints[0].Addresses[0] = "10.244.9.9"
	a.Config.NodeIPs[0] = netip.MustParseAddr("192.0.2.1")
	if b.Services[0].Name == "changed" || b.Slices[0].Endpoints[0].Addresses[0] == "10.244.9.9" || b.Config.NodeIPs[0] != netip.MustParseAddr(NodeIP) {
		t.Error("Fixture shares objects between calls")
	}
}

// TestCompare checks that Compare reports each kind of difference, and
// accepts targets in any order.
func TestCompare(t *testing.T) {
	f := Flow{
		Name: "hairpin",
		Pkt:  plan.Packet{Src: netip.MustParseAddr(PodA), Dst: netip.MustParseAddrPort("10.96.0.11:80"), Protocol: "TCP"},
		Want: Expect{
			Action:          plan.Forward,
			Endpoints:       []netip.AddrPort{netip.MustParseAddrPort("10.244.1.2:8080"), netip.MustParseAddrPort("10.244.2.2:8080")},
			Masquerade:      MasqHairpin,
			AffinitySeconds: 60,
		},
	}
	tg := func(s string, masq bool) plan.Target {
		return plan.Target{Endpoint: netip.MustParseAddrPort(s), Masquerade: masq}
	}
	good := plan.Decision{Action: plan.Forward, AffinitySeconds: 60, Reason: "anything",
		Targets: []plan.Target{tg("10.244.2.2:8080", false), tg("10.244.1.2:8080", true)}}
	if err := Compare(f, good); err != nil {
		t.Errorf("good decision in another order: %v", err)
	}
	for _, tt := range []struct {
		name string
		d    plan.Decision
		want string
	}{
		{"action", plan.Decision{Action: plan.Drop}, "action DROP, want FORWARD"},
		{"missing", plan.Decision{Action: plan.Forward, AffinitySeconds: 60, Targets: good.Targets[:1]}, "missing endpoints 10.244.1.2:8080"},
		{"extra", plan.Decision{Action: plan.Forward, AffinitySeconds: 60, Targets: append(good.Targets[:2:2], tg("10.244.2.3:8080", false))}, "unexpected endpoints 10.244.2.3:8080"},
		{"duplicate", plan.Decision{Action: plan.Forward, AffinitySeconds: 60, Targets: append(good.Targets[:2:2], tg("10.244.2.2:8080", false))}, "more than once"},
		{"masquerade", plan.Decision{Action: plan.Forward, AffinitySeconds: 60, Targets: []plan.Target{tg("10.244.2.2:8080", true), tg("10.244.1.2:8080", true)}}, "10.244.2.2:8080 masquerade true, want false"},
		{"no hairpin", plan.Decision{Action: plan.Forward, AffinitySeconds: 60, Targets: []plan.Target{tg("10.244.2.2:8080", false), tg("10.244.1.2:8080", false)}}, "10.244.1.2:8080 masquerade false, want true"},
		{"affinity", plan.Decision{Action: plan.Forward, Targets: good.Targets}, "affinity 0s, want 60s"},
		{"scheduler", plan.Decision{Action: plan.Forward, AffinitySeconds: 60, Targets: good.Targets, Scheduler: "rr"}, "scheduler rr, want random"},
	} {
		err := Compare(f, tt.d)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	drop := Flow{Name: "drop", Pkt: f.Pkt, Want: Expect{Action: plan.Drop}}
	if err := Compare(drop, plan.Decision{Action: plan.Drop, Reason: "x"}); err != nil {
		t.Errorf("drop: %v", err)
	}
	if err := Compare(drop, plan.Decision{Action: plan.Drop, Targets: good.Targets}); err == nil {
		t.Error("drop with targets accepted")
	}
}
