package classes_test

import (
	"context"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/classes"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
)

var _ dataplane.Dataplane = (*classes.Dataplane)(nil)

// TestTraceFlows: every flow of the shared table, traced through the
// classes the plan was rendered into, gets the flow's hand-written
// expectation.
func TestTraceFlows(t *testing.T) {
	in := flows.Fixture()
	p, errs := plan.Build(in)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	d := &classes.Dataplane{}
	if err := d.Sync(context.Background(), p, plan.Changes{Full: true}); err != nil {
		t.Fatal(err)
	}
	for _, fl := range flows.FlowsFor(plan.Capabilities{}) {
		t.Run(fl.Name, func(t *testing.T) {
			paths, err := d.Trace(in.Config.NodeIPs, fl.Pkt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := dataplane.Decide(paths)
			if err != nil {
				t.Fatalf("%v\n%+v", err, paths)
			}
			if err := flows.Compare(fl, got); err != nil {
				t.Fatalf("%v\nrules: %v\npaths: %+v", err, d.Tables[plan.FamilyOf(fl.Pkt.Src)].Rows, paths)
			}
		})
	}
}
