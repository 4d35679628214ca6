package iptables

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
)

// fakeSync is a full sync of the flow fixture into a fake kernel.
func fakeSync(t *testing.T) (*plan.Plan, *Fake) {
	t.Helper()
	p, errs := plan.Build(flows.FixtureFor(Capabilities))
	if len(errs) > 0 {
		t.Fatalf("fixture: %v", errs)
	}
	fake := NewFake()
	if err := New(Options{Kernel: fake}).Sync(context.Background(), p, plan.Changes{Full: true}); err != nil {
		t.Fatal(err)
	}
	return p, fake
}

// TestTraceFlows runs every flow of the shared table through the tracer
// over the iptables-save dump of a full sync, and through the plan.
func TestTraceFlows(t *testing.T) {
	p, fake := fakeSync(t)
	for _, fl := range flows.FlowsFor(Capabilities) {
		t.Run(fl.Name, func(t *testing.T) {
			flows.Check(t, fl, p.Decide(fl.Pkt))
			tables := ParseSave(fake.Dump(plan.FamilyOf(fl.Pkt.Src)))
			paths, err := Trace(tables, p.Config.NodeIPs, fl.Pkt)
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
	var b strings.Builder
	for i, p := range paths {
		fmt.Fprintf(&b, "path %d: %s %s p=%.4f\n", i, p.Action, p.Endpoint, p.Probability)
		for _, s := range p.Steps {
			b.WriteString("    " + s + "\n")
		}
	}
	return b.String()
}

// TestTraceCatchesDeletedRule: a DNAT rule deleted by hand changes a
// flow's verdict, and the comparison sees it.
func TestTraceCatchesDeletedRule(t *testing.T) {
	p, fake := fakeSync(t)
	tables := ParseSave(fake.Dump(plan.IPv4))
	fl := flows.FlowsFor(Capabilities)[0] // one remote endpoint
	deleted := 0
	for _, c := range tables["nat"].Chains {
		if strings.HasPrefix(c.Name, prefixSEP) && strings.Contains(strings.Join(c.Rules, " "), "flows/one") {
			c.Rules = slices.DeleteFunc(c.Rules, func(r string) bool { return strings.Contains(r, "DNAT --to-destination 10.244.2.2:8080") })
			deleted++
		}
	}
	if deleted != 1 {
		t.Fatalf("%d endpoint chains of flows/one, want 1", deleted)
	}
	paths, err := Trace(tables, p.Config.NodeIPs, fl.Pkt)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decision(paths)
	if err == nil && flows.Compare(fl, got) == nil {
		t.Fatal("deleting the DNAT rule went unnoticed")
	}
}

// TestTraceRejectsUnknownShapes: a rule shape the renderer does not write
// makes the tracer fail.
func TestTraceRejectsUnknownShapes(t *testing.T) {
	p, fake := fakeSync(t)
	tables := ParseSave(fake.Dump(plan.IPv4))
	c := tables["nat"].Chains[chainServices]
	c.Rules = append([]string{"-p tcp -m multiport --dports 80 -j ACCEPT"}, c.Rules...)
	if _, err := Trace(tables, p.Config.NodeIPs, flows.FlowsFor(Capabilities)[0].Pkt); err == nil {
		t.Fatal("tracer accepted an unknown rule shape")
	}
}
