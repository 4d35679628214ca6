package nftables

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestTraceKernelFlows is TestTraceFlows over what the kernel holds: the
// fixture is synced into a network namespace, the tables are read back with
// `nft list table` and every flow is traced through them.
func TestTraceKernelFlows(t *testing.T) {
	c, in := syncFixture(t)
	traceEveryFlow(t, readKernel(t, c), in)
}

// TestTraceKernelDetectsDeletedRule deletes, by hand, the rule that sends
// the ClusterIP traffic of flows/three to its endpoints: the trace of that
// flow over the kernel's tables must now disagree with the plan.
func TestTraceKernelDetectsDeletedRule(t *testing.T) {
	c, in := syncFixture(t)
	ctx := context.Background()
	chain := ""
	for name := range readKernel(t, c)[plan.IPv4].Chains {
		if strings.HasPrefix(name, prefixService) && strings.Contains(name, "-flows/three/") {
			chain = name
		}
	}
	listing, err := c.Node1.Exec(ctx, "nft", "-a", "list", "chain", "ip", DefaultTable, chain)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`goto \S+ # handle (\d+)`).FindStringSubmatch(listing)
	if m == nil {
		t.Fatalf("no goto rule in %s:\n%s", chain, listing)
	}
	if _, err := c.Node1.Exec(ctx, "nft", "delete", "rule", "ip", DefaultTable, chain, "handle", m[1]); err != nil {
		t.Fatal(err)
	}
	fl := flows.FlowsFor(Capabilities)[1]
	if fl.Pkt.Dst.String() != "10.96.0.11:80" {
		t.Fatalf("flow 1 is %q, want the one to flows/three", fl.Name)
	}
	paths, err := Trace(readKernel(t, c)[plan.IPv4], in.Config.NodeIPs, fl.Pkt)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decision(paths)
	if err == nil && flows.Compare(fl, got) == nil {
		t.Fatalf("the trace still agrees with the plan after the rule was deleted:\n%s", showPaths(paths))
	}
	t.Logf("detected: %v %v", err, flows.Compare(fl, got))
}

// syncFixture syncs flows.FixtureFor(Capabilities) into node1 of a new test cluster.
func syncFixture(t *testing.T) (*testnet.Cluster, plan.Input) {
	t.Helper()
	testnet.RequireKernel(t, "nft")
	c := testnet.New(t, testnet.Options{})
	in := flows.FixtureFor(Capabilities)
	p, errs := plan.Build(in)
	if len(errs) > 0 {
		t.Fatalf("fixture: %v", errs)
	}
	dp := New(Options{})
	if err := c.Node1.Do(func() error { return dp.Sync(context.Background(), p, plan.Changes{Full: true}) }); err != nil {
		t.Fatal(err)
	}
	return c, in
}

// readKernel reads node1's tables back with `nft list table`.
func readKernel(t *testing.T, c *testnet.Cluster) map[plan.Family]*Ruleset {
	t.Helper()
	rulesets := map[plan.Family]*Ruleset{}
	for f, family := range map[plan.Family]string{plan.IPv4: "ip", plan.IPv6: "ip6"} {
		out, err := c.Node1.Exec(context.Background(), "nft", "list", "table", family, DefaultTable)
		if err != nil {
			t.Fatal(err)
		}
		if rulesets[f], err = RulesetFromListing(out); err != nil {
			t.Fatal(err)
		}
	}
	return rulesets
}
