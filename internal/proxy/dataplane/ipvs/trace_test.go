package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

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

// TestTraceHostOutsideSourceRanges: the node's own connection, from an
// address of its outside the source ranges, to a load-balancer IP is
// dropped, as the plan says, though IPVS takes the node's packets before
// filter OUTPUT. (The fixture's ranges hold its node IP.)
func TestTraceHostOutsideSourceRanges(t *testing.T) {
	p, n := fixtureSync(t)
	pkt := plan.Packet{Src: netip.MustParseAddr("192.0.2.77"), Dst: netip.MustParseAddrPort("203.0.113.19:443"), Protocol: v1.ProtocolTCP, FromHost: true}
	if d := p.Decide(pkt); d.Action != plan.Drop {
		t.Fatalf("the plan says %v, the fixture must drop the node outside the source ranges", d.Action)
	}
	paths, err := Trace(n.layer.State(), iptables.ParseSave(n.ipt.Dump(plan.IPv4)), n.addrs, pkt)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := dataplane.Decide(paths); err != nil || got.Action != plan.Drop {
		t.Errorf("tracer: %v, %v, want DROP\n%s", got.Action, err, showPaths(paths))
	}
}
