package ipvs

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
	"github.com/svcproxy/svcproxy/internal/testkit/logtest"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
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

// TestVirtualServerConflict: two Services claiming one external IP and
// port do not fail the sync (the kernel layer refuses a State listing a
// virtual server twice): the first in key order keeps it, and the other is
// reported once while the conflict lasts.
func TestVirtualServerConflict(t *testing.T) {
	in := flows.Fixture()
	a := objects.Service("default", "a", objects.ClusterIPs("10.96.9.1"), objects.Port("", v1.ProtocolTCP, 80, 0), objects.ExternalIPs("203.0.113.99"))
	b := objects.Service("default", "b", objects.ClusterIPs("10.96.9.2"), objects.Port("", v1.ProtocolTCP, 80, 0), objects.ExternalIPs("203.0.113.99"))
	in.Services = append(in.Services, a, b)
	for _, svc := range []*v1.Service{a, b} {
		in.Slices = append(in.Slices, objects.Slice("default", svc.Name, svc.Name, discovery.AddressTypeIPv4,
			[]discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolTCP, 8080)}, objects.Endpoint("10.244.2.9", objects.OnNode("node2"))))
	}
	p, errs := plan.Build(in)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	n := newFakeNode(in.Config.NodeIPs)
	logs := logtest.New(0)
	n.dp.opts.Log = logs.Logger()
	for range 2 {
		if err := n.dp.Sync(context.Background(), p, plan.Changes{Full: true}); err != nil {
			t.Fatal(err)
		}
	}
	if c := logs.Count("two service ports claim one virtual server", "default/b", "TCP 203.0.113.99:80", "default/a"); c != 1 {
		t.Errorf("conflict reported %d times, want once:\n%s", c, strings.Join(logs.Lines(), "\n"))
	}
}
