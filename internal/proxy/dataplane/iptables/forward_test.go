package iptables_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// forwardPlan is one Service, ClusterIP 10.96.1.10:80 and NodePort 30001,
// served by pod2a (on node2) on port 8080.
func forwardPlan(t *testing.T, c *testnet.Cluster) *plan.Plan {
	t.Helper()
	svc := objects.Service("default", "fwd", objects.Port("http", v1.ProtocolTCP, 80, 0), objects.ClusterIPs("10.96.1.10"), objects.NodePort(30001))
	svc.Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
	pod := c.Pods["pod2a"]
	sl := objects.Slice("default", "fwd-ipv4", "fwd", discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, 8080)},
		objects.Endpoint(pod.IPv4.String(), objects.Conditions(true, true, false), objects.OnNode("node2"), objects.InZone("b")))
	p, errs := plan.Build(plan.Input{Node: objects.Node("node1", "a"), Services: []*v1.Service{svc}, Slices: []*discovery.EndpointSlice{sl},
		Config: plan.Config{NodeName: "node1", ClusterCIDRs: []netip.Prefix{testnet.ClusterCIDRv4, testnet.ClusterCIDRv6}, NodeIPs: testnet.Node1Addrs.IPs()}})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return p
}

// TestForwardPolicyDrop: with node1's FORWARD policy DROP (a Docker host),
// plain pod-to-pod forwarding through node1 is dropped, while Service
// traffic the proxy DNATed is accepted by KUBE-FORWARD: a pod's traffic to
// the ClusterIP (not masqueraded) and ext's traffic to the NodePort.
func TestForwardPolicyDrop(t *testing.T) {
	testnet.RequireKernel(t, "iptables", "nft")
	c := testnet.New(t, testnet.Options{})
	for _, p := range c.PodList {
		p.Serve(t, 8080)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Node1.Exec(ctx, "iptables", "-P", "FORWARD", "DROP"); err != nil {
		t.Fatal(err)
	}
	pod1a, pod2a := c.Pods["pod1a"], c.Pods["pod2a"]
	if _, err := pod1a.NS.Ask(ctx, "tcp", netip.AddrPortFrom(pod2a.IPv4, 8080), 500*time.Millisecond); err == nil {
		t.Fatal("pod1a reached pod2a directly: the FORWARD policy DROP is not in force")
	}
	dp := iptables.New(iptables.Options{Families: []plan.Family{plan.IPv4}})
	defer c.Node1.Do(func() error { return dp.Cleanup(context.Background()) })
	if err := c.Node1.Do(func() error { return dp.Sync(ctx, forwardPlan(t, c), plan.Changes{Full: true}) }); err != nil {
		t.Fatal(err)
	}
	r, err := pod1a.NS.Ask(ctx, "tcp", netip.MustParseAddrPort("10.96.1.10:80"), 2*time.Second)
	if err != nil || r.Pod != "pod2a" || r.Src.Addr() != pod1a.IPv4 {
		t.Errorf("pod1a → ClusterIP: %+v, %v; want pod2a seeing pod1a", r, err)
	}
	r, err = c.Ext.Ask(ctx, "tcp", netip.AddrPortFrom(testnet.Node1Addrs.LANv4, 30001), 2*time.Second)
	if err != nil || r.Pod != "pod2a" {
		t.Errorf("ext → NodePort: %+v, %v; want pod2a", r, err)
	}
}

// TestCrossModeCleanup: the agent calls the other mode's Cleanup on start.
// After an nftables sync and an iptables sync, nftables' Cleanup leaves
// only the iptables rules, and iptables' Cleanup only the nftables table.
func TestCrossModeCleanup(t *testing.T) {
	testnet.RequireKernel(t, "iptables", "nft")
	c := testnet.New(t, testnet.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := forwardPlan(t, c)
	state := func() (ipt, nft bool) {
		t.Helper()
		save, err := c.Node1.Exec(ctx, "iptables-save")
		if err != nil {
			t.Fatal(err)
		}
		tables, err := c.Node1.Exec(ctx, "nft", "list", "tables")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(save, "KUBE-SERVICES"), strings.Contains(tables, "svcproxy")
	}
	for _, order := range []string{"iptables last", "nftables last"} {
		ipt := iptables.New(iptables.Options{})
		nft := nftables.New(nftables.Options{})
		err := c.Node1.Do(func() error {
			if err := ipt.Sync(ctx, p, plan.Changes{Full: true}); err != nil {
				return err
			}
			if err := nft.Sync(ctx, p, plan.Changes{Full: true}); err != nil {
				return err
			}
			if order == "iptables last" {
				return nft.Cleanup(ctx)
			}
			return ipt.Cleanup(ctx)
		})
		if err != nil {
			t.Fatalf("%s: %v", order, err)
		}
		hasIpt, hasNft := state()
		if hasIpt != (order == "iptables last") || hasNft != (order == "nftables last") {
			t.Errorf("%s: iptables rules %v, nftables table %v", order, hasIpt, hasNft)
		}
		if err := c.Node1.Do(func() error { return errorsJoin(ipt.Cleanup(ctx), nft.Cleanup(ctx)) }); err != nil {
			t.Fatal(err)
		}
		if hasIpt, hasNft := state(); hasIpt || hasNft {
			t.Errorf("%s: after both cleanups: iptables rules %v, nftables table %v", order, hasIpt, hasNft)
		}
	}
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
