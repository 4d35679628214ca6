package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// benchNodeIPs are the node's addresses: one, so one NodePort virtual
// server per Service.
var benchNodeIPs = []netip.Addr{netip.MustParseAddr("198.51.100.1")}

// benchWorld is a tracker holding n Services of 10 endpoints each, and
// their EndpointSlices.
func benchWorld(n int) (*plan.Tracker, []*discovery.EndpointSlice) {
	cfg := plan.Config{NodeName: "node1", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, NodeIPs: benchNodeIPs}
	tr := plan.NewTracker(cfg)
	tr.SetNode(objects.Node("node1", ""))
	var slices []*discovery.EndpointSlice
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		tr.SetService(objects.Service("default", name, objects.ClusterIPs(ip), objects.Port("", v1.ProtocolTCP, 80, int32(30000+i%2000))))
		var eps []discovery.Endpoint
		for j := range 10 {
			eps = append(eps, objects.Endpoint(fmt.Sprintf("10.244.%d.%d", (i*10+j)/250%250, (i*10+j)%250+1), objects.OnNode("node2")))
		}
		sl := objects.Slice("default", name, name, discovery.AddressTypeIPv4, []discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolTCP, 8080)}, eps...)
		tr.SetSlice(sl)
		slices = append(slices, sl)
	}
	return tr, slices
}

// BenchmarkSyncFake measures the CPU a sync costs the dataplane and the
// kernel layer's planning on fake kernels (no netlink): a full sync, and
// a partial one after one EndpointSlice change, at 1k and 10k Services of
// 10 endpoints, each with a NodePort.
func BenchmarkSyncFake(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d/full", n), func(b *testing.B) {
			tr, _ := benchWorld(n)
			p, _ := tr.Sync()
			for b.Loop() {
				nd := newFakeNode(benchNodeIPs)
				if err := nd.dp.Sync(context.Background(), p, plan.Changes{Full: true}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("services=%d/one-change", n), func(b *testing.B) {
			tr, sl := benchWorld(n)
			p, ch := tr.Sync()
			nd := newFakeNode(benchNodeIPs)
			if err := nd.dp.Sync(context.Background(), p, ch); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				s := sl[i%len(sl)].DeepCopy()
				if i%2 == 0 {
					s.Endpoints = s.Endpoints[:9]
				}
				tr.SetSlice(s)
				p, ch := tr.Sync()
				if err := nd.dp.Sync(context.Background(), p, ch); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
