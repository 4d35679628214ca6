package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
)

// fakeNode is the dataplane over fake kernels, with the node's addresses.
type fakeNode struct {
	dp      *Dataplane
	layer   *Fake
	ipt     *iptables.Fake
	addrs   []netip.Addr
	sysctls map[string]int
}

func newFakeNode(addrs []netip.Addr) *fakeNode {
	n := &fakeNode{layer: NewFake(Options{}), ipt: iptables.NewFake(), addrs: addrs, sysctls: map[string]int{}}
	n.dp = NewDataplane(DataplaneOptions{
		Layer: n.layer, IPTables: n.ipt,
		NodeAddrs: func(f plan.Family) ([]netip.Addr, error) {
			var out []netip.Addr
			for _, a := range n.addrs {
				if plan.FamilyOf(a) == f {
					out = append(out, a)
				}
			}
			return out, nil
		},
		Sysctl: func(name string, v int) error { n.sysctls[name] = v; return nil },
	})
	return n
}

// fixtureSync is a full sync of the flow fixture on fake kernels.
func fixtureSync(t *testing.T) (*plan.Plan, *fakeNode) {
	t.Helper()
	in := flows.Fixture()
	p, errs := plan.Build(in)
	if len(errs) > 0 {
		t.Fatalf("fixture: %v", errs)
	}
	n := newFakeNode(in.Config.NodeIPs)
	if err := n.dp.Sync(context.Background(), p, plan.Changes{Full: true}); err != nil {
		t.Fatal(err)
	}
	return p, n
}

// TestTraceFlows runs every flow of the shared table through the tracer
// over what a full sync of the fixture left in the fake kernels.
func TestTraceFlows(t *testing.T) {
	p, n := fixtureSync(t)
	state := n.layer.State()
	for _, fl := range flows.Flows() {
		t.Run(fl.Name, func(t *testing.T) {
			flows.Check(t, fl, p.Decide(fl.Pkt))
			tables := iptables.ParseSave(n.ipt.Dump(plan.FamilyOf(fl.Pkt.Src)))
			paths, err := Trace(state, tables, n.addrs, fl.Pkt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := dataplane.Decide(paths)
			if err != nil {
				t.Fatalf("%v\n%s", err, showPaths(paths))
			}
			if err := flows.Compare(fl, got); err != nil {
				t.Fatalf("tracer: %v\n%s", err, showPaths(paths))
			}
		})
	}
}

func showPaths(paths []dataplane.TracePath) string {
	var b strings.Builder
	for i, p := range paths {
		fmt.Fprintf(&b, "path %d: %s %s p=%.4f\n", i, p.Action, p.Endpoint, p.Probability)
		for _, s := range p.Steps {
			b.WriteString("    " + s + "\n")
		}
	}
	return b.String()
}
