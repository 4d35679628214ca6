package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestKernelSourceHashPredicted: under the sh scheduler the tracer
// computes the kernel's jhash, so it names the endpoint each source gets
// before any packet is sent. Real connections from five sources (pods
// over IPv4 and IPv6, ext through the NodePort) must land exactly there.
func TestKernelSourceHashPredicted(t *testing.T) {
	testnet.RequireKernel(t, "nft")
	c := testnet.New(t, testnet.Options{})
	eps := []*testnet.Pod{c.Pods["pod1b"], c.Pods["pod2a"], c.Pods["pod2b"]}
	for _, p := range c.PodList {
		p.Serve(t, 8080)
	}
	in := shInput(eps)
	p, errs := plan.Build(in)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	dp := New(Options{})
	if err := c.Node1.Do(func() error { return dp.Sync(context.Background(), p, plan.Changes{Full: true}) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Node1.Do(func() error { return dp.Cleanup(context.Background()) }) })
	rulesets := readKernel(t, c)
	pod1a := c.Pods["pod1a"]
	nodePort := netip.AddrPortFrom(testnet.Node1Addrs.LANv4, 30040)
	seen := map[netip.Addr]bool{}
	for _, src := range []struct {
		ns  *testnet.NS
		pkt plan.Packet
	}{
		{pod1a.NS, packet(pod1a.IPv4, "10.96.40.10:80")},
		{c.Pods["pod1b"].NS, packet(c.Pods["pod1b"].IPv4, "10.96.40.10:80")},
		{pod1a.NS, packet(pod1a.IPv6, "[fd00:10:96::40:10]:80")},
		{c.Pods["pod1b"].NS, packet(c.Pods["pod1b"].IPv6, "[fd00:10:96::40:10]:80")},
		{c.Ext, plan.Packet{Src: testnet.ExtIPv4, Dst: nodePort, Protocol: v1.ProtocolTCP}},
	} {
		what := fmt.Sprintf("%s → %s", src.pkt.Src, src.pkt.Dst)
		want := predicted(t, rulesets[plan.FamilyOf(src.pkt.Src)], src.pkt)
		seen[want.Addr()] = true
		for range 3 {
			r, err := src.ns.Ask(context.Background(), "tcp", src.pkt.Dst, 2*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if got := c.Pods[r.Pod]; got == nil || !hasAddr(got, want.Addr()) {
				t.Fatalf("%s: answered by %s, the tracer predicted %s", what, r.Pod, want)
			}
		}
		t.Logf("%s: %s, as predicted", what, want)
	}
	t.Logf("the sources reached %d distinct endpoint addresses", len(seen))
}

// predicted traces pkt and returns the endpoint of the path the tracer
// predicts; it fails t unless exactly one path is predicted.
func predicted(t *testing.T, rs *Ruleset, pkt plan.Packet) netip.AddrPort {
	t.Helper()
	paths, err := Trace(rs, testnet.Node1Addrs.IPs(), pkt)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.AddrPort
	for _, p := range paths {
		if p.Predicted {
			out = append(out, p.Endpoint)
		}
	}
	if len(out) != 1 || len(paths) != 3 {
		t.Fatalf("%s → %s: %d paths, predicted %v; want 3 paths, one predicted\n%s", pkt.Src, pkt.Dst, len(paths), out, showPaths(paths))
	}
	return out[0]
}

func hasAddr(p *testnet.Pod, a netip.Addr) bool { return p.IPv4 == a || p.IPv6 == a }

func packet(src netip.Addr, dst string) plan.Packet {
	return plan.Packet{Src: src, Dst: netip.MustParseAddrPort(dst), Protocol: v1.ProtocolTCP}
}

// shInput is a dual-stack NodePort Service choosing sh, with eps as its
// endpoints, planned for node1 of a testnet cluster.
func shInput(eps []*testnet.Pod) plan.Input {
	svc := objects.Service("default", "sh", objects.ClusterIPs("10.96.40.10", "fd00:10:96::40:10"),
		objects.IPFamilies(v1.IPFamilyPolicyRequireDualStack), objects.Port("", v1.ProtocolTCP, 80, 30040),
		objects.Annotation(plan.AnnotationScheduler, "sh"))
	svc.Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
	in := plan.Input{Services: []*v1.Service{svc}, Node: objects.Node("node1", ""), Config: plan.Config{
		NodeName: "node1", ClusterCIDRs: []netip.Prefix{testnet.ClusterCIDRv4, testnet.ClusterCIDRv6},
		NodeIPs: testnet.Node1Addrs.IPs(), Dataplane: Capabilities,
	}}
	for _, at := range []discovery.AddressType{discovery.AddressTypeIPv4, discovery.AddressTypeIPv6} {
		var list []discovery.Endpoint
		for _, p := range eps {
			a := p.IPv4
			if at == discovery.AddressTypeIPv6 {
				a = p.IPv6
			}
			list = append(list, objects.Endpoint(a.String(), objects.Conditions(true, true, false), objects.OnNode(p.Node)))
		}
		in.Slices = append(in.Slices, objects.Slice("default", "sh-"+strings.ToLower(string(at)), "sh", at,
			[]discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolTCP, 8080)}, list...))
	}
	return in
}
