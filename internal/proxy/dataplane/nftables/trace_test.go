package nftables

import (
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
)

// TestTraceFlows runs every flow of the shared packet-flow table through the
// tracer over the table a full sync wrote, and through the plan: both must
// give the flow's hand-written expectation.
func TestTraceFlows(t *testing.T) {
	in := flows.FixtureFor(Capabilities)
	p, errs := plan.Build(in)
	if len(errs) > 0 {
		t.Fatalf("fixture: %v", errs)
	}
	fd := newFakeDataplane()
	fd.mustSync(t, p, plan.Changes{Full: true})
	rulesets := map[plan.Family]*Ruleset{}
	for f, fake := range fd.fakes {
		rulesets[f] = RulesetFromFake(fake)
	}
	for _, fl := range flows.FlowsFor(Capabilities) {
		flows.Check(t, fl, p.Decide(fl.Pkt))
	}
	traceEveryFlow(t, rulesets, in)
}

// traceEveryFlow traces each flow of the shared table over the rulesets
// and wants the flow's hand-written expectation.
func traceEveryFlow(t *testing.T, rulesets map[plan.Family]*Ruleset, in plan.Input) {
	for _, fl := range flows.FlowsFor(Capabilities) {
		t.Run(fl.Name, func(t *testing.T) {
			paths, err := Trace(rulesets[plan.FamilyOf(fl.Pkt.Src)], in.Config.NodeIPs, fl.Pkt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decision(paths)
			if err != nil {
				t.Fatalf("%v\n%s", err, showPaths(paths))
			}
			if err := flows.Compare(fl, got); err != nil {
				t.Fatalf("tracer: %v\n%s", err, showPaths(paths))
			}
		})
	}
}

func showPaths(paths []Path) string {
	var s string
	for i, p := range paths {
		s += "path " + string(rune('0'+i%10)) + ": " + string(p.Action) + " " + p.Endpoint.String() + "\n"
		for _, st := range p.Steps {
			s += "    " + st + "\n"
		}
	}
	return s
}

// TestTraceRejectsUnknownShapes: the tracer must fail on a rule shape the
// renderer does not write, so a new shape cannot slip past the flow tests.
func TestTraceRejectsUnknownShapes(t *testing.T) {
	p, _ := plan.Build(flows.FixtureFor(Capabilities))
	fd := newFakeDataplane()
	fd.mustSync(t, p, plan.Changes{Full: true})
	rs := RulesetFromFake(fd.fakes[plan.IPv4])
	rs.Chains[chainServices].Rules = append([]string{"tcp dport 80 counter"}, rs.Chains[chainServices].Rules...)
	fl := flows.FlowsFor(Capabilities)[0]
	if _, err := Trace(rs, nil, fl.Pkt); err == nil {
		t.Fatal("tracer accepted an unknown rule shape")
	}
}
