package explain_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/ipvs"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
	"github.com/svcproxy/svcproxy/internal/testkit/vm"
)

// dataplanes are the modes `svcproxy trace` reads a kernel in, each with
// its dataplane.
var dataplanes = []struct {
	mode string
	new  func() dataplane.Dataplane
}{
	{"nftables", func() dataplane.Dataplane { return nftables.New(nftables.Options{}) }},
	{"iptables", func() dataplane.Dataplane { return iptables.New(iptables.Options{}) }},
	{"ipvs", func() dataplane.Dataplane { return ipvs.NewDataplane(ipvs.DataplaneOptions{}) }},
}

// TestTraceEveryFlowInTheKernel programs the flow fixture into a node's
// kernel with each dataplane, serves the plan as the agent does, and traces
// every flow of the shared table with explain.Node, as `svcproxy trace
// --netns` does: the rules read back from the kernel (IPVS over netlink)
// must agree with the plan, and with the flow's hand-written expectation.
// The ipvs mode runs in the test VM when this kernel has no IPVS; there,
// a virtual server deleted by hand must then be reported.
func TestTraceEveryFlowInTheKernel(t *testing.T) {
	for _, d := range dataplanes {
		t.Run(d.mode, func(t *testing.T) {
			if d.mode == "ipvs" && vm.RunTest(t, vm.IPVS, vm.Command{}) {
				return
			}
			node, c := programmed(t, d.mode, d.new())
			for _, fl := range flows.Flows() {
				r, err := node.Trace(context.Background(), fl.Pkt)
				if err != nil {
					t.Errorf("%s: %v", fl.Name, err)
					continue
				}
				var b strings.Builder
				r.Write(&b)
				if len(r.Problems) > 0 || r.Kernel.Action != string(fl.Want.Action) {
					t.Errorf("%s: %v\n%s", fl.Name, r.Problems, b.String())
				}
				if d.mode == "nftables" && fl.Want.Scheduler == "sh" && strings.Count(b.String(), "<- this path: the source hash of") != 1 {
					t.Errorf("%s: the trace does not point out the source's endpoint once:\n%s", fl.Name, b.String())
				}
			}
			if d.mode == "ipvs" && !t.Failed() {
				checkIPVSStatus(t, node)
				checkDeletedVirtualServer(t, node, c)
			}
		})
	}
}

// TestTraceReportsADeletedRule deletes by hand the nftables rule that sends
// a ClusterIP's traffic to its endpoints; trace must report the
// disagreement.
func TestTraceReportsADeletedRule(t *testing.T) {
	node, c := programmed(t, "nftables", nftables.New(nftables.Options{}))
	ctx := context.Background()
	fl := flows.Flows()[1] // pod to flows/three's ClusterIP
	r, err := node.Trace(ctx, fl.Pkt)
	if err != nil || len(r.Problems) > 0 {
		t.Fatalf("before: %v %v", r, err)
	}
	chain := "" // the service's chain
	for _, step := range r.Paths[0].Steps {
		if strings.HasPrefix(step, "svc-") {
			chain = strings.SplitN(step, ":", 2)[0]
		}
	}
	listing, err := c.Node1.Exec(ctx, "nft", "-a", "list", "chain", "ip", nftables.DefaultTable, chain)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`goto \S+ # handle (\d+)`).FindStringSubmatch(listing)
	if !strings.Contains(chain, "flows/three") || m == nil {
		t.Fatalf("no goto rule in chain %q:\n%s", chain, listing)
	}
	handle := m[1]
	if _, err := c.Node1.Exec(ctx, "nft", "delete", "rule", "ip", nftables.DefaultTable, chain, "handle", handle); err != nil {
		t.Fatal(err)
	}
	r, err = node.Trace(ctx, fl.Pkt)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	r.Write(&b)
	if len(r.Problems) == 0 || !strings.Contains(b.String(), "ERROR: the kernel's rules disagree with the plan") {
		t.Fatalf("a deleted rule went unnoticed:\n%s", b.String())
	}
	t.Logf("reported:\n%s", b.String())
}

// checkIPVSStatus: svcproxy status on an IPVS node shows, under a port,
// its virtual server as the kernel holds it, with a real server per
// endpoint.
func checkIPVSStatus(t *testing.T, node explain.Node) {
	s, err := node.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fl := flows.Flows()[1] // pod to flows/three's ClusterIP, 3 endpoints
	for _, p := range s.Ports {
		for _, vs := range p.IPVS {
			if vs.Address == fl.Pkt.Dst.String() && vs.Protocol == "TCP" && len(vs.Reals) == len(fl.Want.Endpoints) && p.Service == "flows/three" {
				return
			}
		}
	}
	var b strings.Builder
	s.Write(&b)
	t.Errorf("status shows no virtual server %s with %d real servers under flows/three:\n%s", fl.Pkt.Dst, len(fl.Want.Endpoints), b.String())
}

// checkDeletedVirtualServer deletes by hand, with ipvsadm, the IPVS
// virtual server of a ClusterIP; trace, reading IPVS over netlink, must
// report that the node now refuses what the plan forwards.
func checkDeletedVirtualServer(t *testing.T, node explain.Node, c *testnet.Cluster) {
	ctx := context.Background()
	fl := flows.Flows()[1] // pod to flows/three's ClusterIP
	if out, err := c.Node1.Exec(ctx, "ipvsadm", "-D", "-t", fl.Pkt.Dst.String()); err != nil || fl.Pkt.Protocol != "TCP" {
		t.Fatalf("ipvsadm -D -t %s (%s): %v\n%s", fl.Pkt.Dst, fl.Pkt.Protocol, err, out)
	}
	r, err := node.Trace(ctx, fl.Pkt)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	r.Write(&b)
	if len(r.Problems) == 0 || r.Kernel.Action != "REJECT" || !strings.Contains(b.String(), "ERROR: the kernel's rules disagree with the plan") {
		t.Fatalf("a deleted virtual server went unnoticed:\n%s", b.String())
	}
	t.Logf("reported:\n%s", b.String())
}

// programmed syncs the fixture into node1 of a new cluster with dp and
// serves the plan's answers in node1, as the agent's metrics server does.
func programmed(t *testing.T, mode string, dp dataplane.Dataplane) (explain.Node, *testnet.Cluster) {
	t.Helper()
	testnet.RequireKernel(t, "nft", "iptables-save")
	c := testnet.New(t, testnet.Options{})
	caps := map[string]plan.Capabilities{"nftables": nftables.Capabilities, "iptables": iptables.Capabilities, "ipvs": ipvs.Capabilities}[mode]
	p, errs := plan.Build(flows.FixtureFor(caps))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if err := c.Node1.Do(func() error { return dp.Sync(context.Background(), p, plan.Changes{Full: true}) }); err != nil {
		t.Fatal(err)
	}
	l, err := nsrun.Listen(c.Node1.Name, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/proxyMode", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(mode)) })
	mux.Handle("/svcproxy/", explain.Handler(mode, func(fn func(*plan.Plan, explain.SyncStatus)) { fn(p, explain.SyncStatus{Syncs: 1}) }))
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return explain.Node{Netns: c.Node1.Name, Metrics: l.Addr().String()}, c
}
