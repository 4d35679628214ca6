package ipvs

import (
	"context"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
)

// TestPartialSync: a partial sync renders only the changed port, and the
// kernel layer, without reading the kernel whole, changes only that port's
// real servers; the glue, which depends on no single port here, is not
// rewritten. A sync without changes changes nothing.
func TestPartialSync(t *testing.T) {
	in := flows.Fixture()
	tr := plan.NewTracker(in.Config)
	tr.SetNode(in.Node)
	for _, s := range in.Services {
		tr.SetService(s)
	}
	for _, s := range in.Slices {
		tr.SetSlice(s)
	}
	n := newFakeNode(in.Config.NodeIPs)
	ctx := context.Background()
	p, ch := tr.Sync()
	if err := n.dp.Sync(ctx, p, ch); err != nil {
		t.Fatal(err)
	}
	if n.sysctls["net/ipv4/vs/conntrack"] != 1 {
		t.Errorf("sysctls written: %v, want net/ipv4/vs/conntrack=1 among them", n.sysctls)
	}
	glue := n.ipt.Last(plan.IPv4)

	for _, s := range in.Slices {
		if s.Labels["kubernetes.io/service-name"] == "three" {
			s = s.DeepCopy()
			s.Endpoints = s.Endpoints[:len(s.Endpoints)-1]
			tr.SetSlice(s)
		}
	}
	p, ch = tr.Sync()
	if ch.Full || len(ch.Keys) != 1 {
		t.Fatalf("tracker: %+v, want one changed port", ch)
	}
	reads := n.layer.Reads()
	if err := n.dp.Sync(ctx, p, ch); err != nil {
		t.Fatal(err)
	}
	if n.layer.Reads() != reads {
		t.Errorf("the partial sync read the whole kernel")
	}
	ops := opStrings(n.layer.LastOps())
	if len(ops) != 1 || !strings.HasPrefix(ops[0], "delete real TCP 10.96.0.11:80 -> ") {
		t.Errorf("partial sync changed:\n%s\nwant only the removed real server of 10.96.0.11:80 deleted", strings.Join(ops, "\n"))
	}
	if n.ipt.Last(plan.IPv4) != glue {
		t.Errorf("partial sync rewrote the glue:\n%s", n.ipt.Last(plan.IPv4))
	}

	p, ch = tr.Sync()
	if err := n.dp.Sync(ctx, p, ch); err != nil {
		t.Fatal(err)
	}
	if ops := opStrings(n.layer.LastOps()); len(ops) != 0 {
		t.Errorf("a sync without changes changed:\n%s", strings.Join(ops, "\n"))
	}
}

// TestCleanupAfterEitherMode: the iptables mode's cleanup (as a node
// going from ipvs to another mode runs it, before the ipvs mode's) succeeds
// over the glue, whose chains share names with it; the ipvs mode's cleanup
// then leaves no chain, virtual server, address or set.
func TestCleanupAfterEitherMode(t *testing.T) {
	_, n := fixtureSync(t)
	ctx := context.Background()
	ipt := iptables.New(iptables.Options{Kernel: n.ipt})
	if err := ipt.Cleanup(ctx); err != nil {
		t.Fatalf("the iptables mode's cleanup over the ipvs glue: %v", err)
	}
	if err := n.dp.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range plan.Families {
		if dump := n.ipt.Dump(f); strings.Contains(dump, "KUBE-") {
			t.Errorf("%s chains left:\n%s", f, dump)
		}
	}
	if dump := n.layer.Dump(); dump != "" {
		t.Errorf("kernel layer state left:\n%s", dump)
	}
}
