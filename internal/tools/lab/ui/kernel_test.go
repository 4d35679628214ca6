package ui

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// TestFlowsFromTheKernel programs the flow fixture into a node's kernel,
// opens connections from a pod to the dual-stack Service's ClusterIPs over
// IPv4 and IPv6, and reads them back from the node's conntrack table in one
// dump, each named by the endpoint the rules picked.
func TestFlowsFromTheKernel(t *testing.T) {
	testnet.RequireKernel(t, "nft")
	c := testnet.New(t, testnet.Options{})
	p, errs := plan.Build(flows.Fixture())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dp := nftables.New(nftables.Options{})
	if err := c.Node1.Do(func() error { return dp.Sync(ctx, p, plan.Changes{Full: true}) }); err != nil {
		t.Fatal(err)
	}
	const port = 8089 // the "dual" Service's endpoints: pod1a and pod2a
	c.Pods["pod1a"].Serve(t, port)
	c.Pods["pod2a"].Serve(t, port)
	endpoints := map[string]bool{}
	for _, pod := range []*testnet.Pod{c.Pods["pod1a"], c.Pods["pod2a"]} {
		for _, ip := range pod.IPs() {
			endpoints[EndpointKey("TCP", netip.AddrPortFrom(ip, port))] = true
		}
	}
	const each = 5
	for _, dst := range []string{"10.96.0.24:80", "[fd00:10:96::24]:80"} {
		for range each {
			if _, err := c.Pods["pod1b"].NS.Ask(ctx, "tcp", netip.MustParseAddrPort(dst), 5*time.Second); err != nil {
				t.Fatalf("pod1b to %s: %v", dst, err)
			}
		}
	}
	nodes := NewLabNodes(nil)
	defer nodes.Close()
	got, err := nodes.Flows(ctx, lab.Node{Name: "node1", Netns: c.Node1.Name})
	if err != nil {
		t.Fatal(err)
	}
	byFamily := map[bool]int{}
	for _, f := range got {
		if !endpoints[f.Key()] || f.Src.Addr() != c.Pods["pod1b"].IPv4 && f.Src.Addr() != c.Pods["pod1b"].IPv6 {
			t.Errorf("flow %+v: not from pod1b to an endpoint of the dual Service", f)
		}
		byFamily[f.Dst.Addr().Is4()]++
	}
	if byFamily[true] != each || byFamily[false] != each {
		t.Errorf("flows read from node1: %d IPv4, %d IPv6, want %d of each: %+v", byFamily[true], byFamily[false], each, got)
	}
}
