package dptest

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/conntrack"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// Each subtest uses its own ClusterIPs (10.96.<n>.0/24 for subtest n),
// NodePorts (300<nn>) and load-balancer IPs (203.0.113.<n>), so no
// conntrack entry of one subtest can match another's traffic. Entries do
// outlive their subtest (30 s for UDP) and still share reply tuples
// (endpoint → client address and port) with later flows of the same client
// and endpoint through other Service addresses: NAT then gives the later
// flow another source port. So a check of what a backend saw compares the
// client's address (testnet.Reply.SawAddrOf), and its port only where no
// other flow can share the reply tuple: SCTP's, the suite's only SCTP flows.

var (
	node1v4 = testnet.Node1Addrs.LANv4
	extv4   = testnet.ExtIPv4
)

// testClusterIPSpread: pod1a → ClusterIP with three endpoints. New
// connections spread over all of them, and the backends see pod1a's own
// address (pod traffic to a ClusterIP is not masqueraded).
func (s *suite) testClusterIPSpread(t *testing.T) {
	svc := service("spread", objects.ClusterIPs("10.96.1.10"))
	s.apply(t, svc, endpointsOf(svc, s.pod1b, s.pod2a, s.pod2b))
	dst := addrPort("10.96.1.10", svcPort)
	for _, c := range []struct {
		proto  string
		n      int
		lo, hi float64 // allowed share of each endpoint; each bound is ~5σ away from 1/3
	}{
		{"tcp", 300, 0.20, 0.47},
		{"udp", 150, 0.15, 0.52},
	} {
		rs := askN(t, s.pod1a.NS, c.proto, dst, c.n)
		what := fmt.Sprintf("%s pod1a → %s", c.proto, dst)
		onlyFrom(t, what, rs, s.pod1b, s.pod2a, s.pod2b)
		sourceIs(t, what, rs, s.pod1a.IPv4)
		counts := byPod(rs)
		for _, p := range []*testnet.Pod{s.pod1b, s.pod2a, s.pod2b} {
			if share := float64(counts[p.Name]) / float64(c.n); share < c.lo || share > c.hi {
				t.Errorf("%s: %s got %.0f%% of %d requests, want %.0f%%-%.0f%% (%v)", what, p.Name, 100*share, c.n, 100*c.lo, 100*c.hi, counts)
			}
		}
		t.Logf("%s: %v", what, counts)
	}
}

// testNodePortCluster: ext → node1's LAN IP:NodePort with
// externalTrafficPolicy Cluster reaches every endpoint, local or remote, and
// is masqueraded: remote backends see node1's LAN IP, the local one node1's
// address on its veth; none sees ext's.
func (s *suite) testNodePortCluster(t *testing.T) {
	svc := service("np-cluster", objects.ClusterIPs("10.96.2.10"), objects.NodePort(30002))
	s.apply(t, svc, endpointsOf(svc, s.pod1a, s.pod2a, s.pod2b))
	dst := netip.AddrPortFrom(node1v4, 30002)

	rs := askN(t, s.c.Ext, "tcp", dst, 40)
	what := "tcp ext → " + dst.String()
	onlyFrom(t, what, rs, s.pod1a, s.pod2a, s.pod2b)
	reachedAll(t, what, rs, s.pod1a, s.pod2a, s.pod2b)
	s.masqueraded(t, what, rs, plan.IPv4)
	t.Logf("%s: %v", what, byPod(rs))

	rs = askN(t, s.c.Ext, "udp", dst, 10)
	what = "udp ext → " + dst.String()
	onlyFrom(t, what, rs, s.pod1a, s.pod2a, s.pod2b)
	s.masqueraded(t, what, rs, plan.IPv4)
}

// testExternalLocal: with externalTrafficPolicy Local and endpoints on both
// nodes, ext's traffic to the NodePort and to the load-balancer IP reaches
// only the local endpoint, which sees ext's real address. Pods reaching the
// load-balancer IP, and node1 reaching the NodePort, still use every
// endpoint; node1's traffic is masqueraded.
func (s *suite) testExternalLocal(t *testing.T) {
	svc := service("etp-local", objects.ClusterIPs("10.96.3.10"), objects.NodePort(30003), objects.LoadBalancerIngress("203.0.113.3", ""),
		objects.ExternalTrafficPolicyLocal(32003))
	s.apply(t, svc, endpointsOf(svc, s.pod1a, s.pod2a))
	for _, c := range []struct {
		proto string
		dst   netip.AddrPort
		n     int
	}{
		{"tcp", netip.AddrPortFrom(node1v4, 30003), 20},
		{"tcp", addrPort("203.0.113.3", svcPort), 20},
		{"udp", netip.AddrPortFrom(node1v4, 30003), 10},
		{"udp", addrPort("203.0.113.3", svcPort), 10},
	} {
		rs := askN(t, s.c.Ext, c.proto, c.dst, c.n)
		what := fmt.Sprintf("%s ext → %s", c.proto, c.dst)
		onlyFrom(t, what, rs, s.pod1a)
		sourceIs(t, what, rs, extv4)
	}

	dst := addrPort("203.0.113.3", svcPort)
	rs := askN(t, s.pod1b.NS, "tcp", dst, 30)
	what := "tcp pod1b → " + dst.String()
	reachedAll(t, what, rs, s.pod1a, s.pod2a)
	sourceIs(t, what, rs, s.pod1b.IPv4)

	np := netip.AddrPortFrom(node1v4, 30003)
	rs = askN(t, s.c.Node1, "tcp", np, 30)
	what = "tcp node1 → " + np.String()
	reachedAll(t, what, rs, s.pod1a, s.pod2a)
	s.masqueraded(t, what, rs, plan.IPv4)
}

// testExternalLocalNoLocalEndpoint: externalTrafficPolicy Local with only a
// remote endpoint. ext's traffic is dropped (not rejected); a pod and node1
// itself reach the remote endpoint through the same NodePort, the pod
// unmasqueraded. (That node1's own traffic is masqueraded only shows with a
// local endpoint: ExternalLocal checks it.)
func (s *suite) testExternalLocalNoLocalEndpoint(t *testing.T) {
	svc := service("etp-remote", objects.ClusterIPs("10.96.4.10"), objects.NodePort(30004), objects.LoadBalancerIngress("203.0.113.4", ""),
		objects.ExternalTrafficPolicyLocal(32004))
	s.apply(t, svc, endpointsOf(svc, s.pod2a))
	np := netip.AddrPortFrom(node1v4, 30004)
	lb := addrPort("203.0.113.4", svcPort)

	s.expectDropped(t, s.c.Ext, "tcp", np)
	s.expectDropped(t, s.c.Ext, "udp", np)
	s.expectDropped(t, s.c.Ext, "tcp", lb)

	for _, dst := range []netip.AddrPort{np, lb} {
		rs := askN(t, s.pod1a.NS, "tcp", dst, 3)
		what := "tcp pod1a → " + dst.String()
		onlyFrom(t, what, rs, s.pod2a)
		sourceIs(t, what, rs, s.pod1a.IPv4)
	}
	rs := askN(t, s.pod1a.NS, "udp", np, 3)
	onlyFrom(t, "udp pod1a → "+np.String(), rs, s.pod2a)

	rs = askN(t, s.c.Node1, "tcp", np, 3)
	what := "tcp node1 → " + np.String()
	onlyFrom(t, what, rs, s.pod2a)
	s.masqueraded(t, what, rs, plan.IPv4)
}

// testNoEndpoints: a Service without endpoints is rejected at once, on its
// ClusterIP (TCP and UDP) and on its NodePort; so is a port a ClusterIP does
// not define.
func (s *suite) testNoEndpoints(t *testing.T) {
	empty := service("empty", objects.ClusterIPs("10.96.5.10"), objects.NodePort(30005))
	web := service("web", objects.ClusterIPs("10.96.5.20"))
	s.apply(t, empty, web, endpointsOf(web, s.pod2a))

	for _, proto := range []string{"tcp", "udp"} {
		expectRefused(t, s.pod1a.NS, proto, addrPort("10.96.5.10", svcPort))
		expectRefused(t, s.c.Ext, proto, netip.AddrPortFrom(node1v4, 30005))
		// web works on port 80, and refuses the undefined port 81.
		askN(t, s.pod1a.NS, proto, addrPort("10.96.5.20", svcPort), 1)
		expectRefused(t, s.pod1a.NS, proto, addrPort("10.96.5.20", 81))
	}
}

// testInternalLocal: internalTrafficPolicy Local. Without a local endpoint
// pod1a's traffic to the ClusterIP is dropped; with one, it only goes there.
func (s *suite) testInternalLocal(t *testing.T) {
	remote := service("itp-remote", objects.ClusterIPs("10.96.6.10"), objects.InternalTrafficPolicyLocal())
	mixed := service("itp-mixed", objects.ClusterIPs("10.96.6.20"), objects.InternalTrafficPolicyLocal())
	s.apply(t, remote, endpointsOf(remote, s.pod2a, s.pod2b), mixed, endpointsOf(mixed, s.pod1b, s.pod2a))

	s.expectDropped(t, s.pod1a.NS, "tcp", addrPort("10.96.6.10", svcPort))
	s.expectDropped(t, s.pod1a.NS, "udp", addrPort("10.96.6.10", svcPort))

	rs := askN(t, s.pod1a.NS, "tcp", addrPort("10.96.6.20", svcPort), 20)
	onlyFrom(t, "tcp pod1a → 10.96.6.20:80", rs, s.pod1b)
}

// testSessionAffinity: with sessionAffinity ClientIP every connection of a
// client goes to the same endpoint.
func (s *suite) testSessionAffinity(t *testing.T) {
	svc := service("sticky", objects.ClusterIPs("10.96.7.10"), objects.Affinity(300))
	s.apply(t, svc, endpointsOf(svc, s.pod1b, s.pod2a, s.pod2b))
	dst := addrPort("10.96.7.10", svcPort)
	for _, client := range []*testnet.Pod{s.pod1a, s.pod1b} {
		rs := askN(t, client.NS, "tcp", dst, 20)
		what := fmt.Sprintf("tcp %s → %s", client.Name, dst)
		onlyFrom(t, what, rs, s.pod1b, s.pod2a, s.pod2b)
		if counts := byPod(rs); len(counts) != 1 {
			t.Errorf("%s: spread over %v, want one endpoint", what, counts)
		} else {
			t.Logf("%s: %v", what, counts)
		}
	}
}

// testHairpin: pod1a reaching itself through a ClusterIP is answered, and
// sees a source that is node1's, not its own (or it would answer itself
// directly and the connection would fail).
func (s *suite) testHairpin(t *testing.T) {
	svc := service("hairpin", objects.ClusterIPs("10.96.8.10"))
	s.apply(t, svc, endpointsOf(svc, s.pod1a))
	dst := addrPort("10.96.8.10", svcPort)
	for _, proto := range []string{"tcp", "udp"} {
		rs := askN(t, s.pod1a.NS, proto, dst, 3)
		what := fmt.Sprintf("%s pod1a → %s", proto, dst)
		onlyFrom(t, what, rs, s.pod1a)
		s.masqueraded(t, what, rs, plan.IPv4)
		t.Logf("%s: pod1a saw %s", what, rs[0].Src)
	}
}

// testSourceRanges: loadBalancerSourceRanges drop other sources on the
// load-balancer IP, before any DNAT, and let listed ones through. They do
// not apply to the NodePort.
func (s *suite) testSourceRanges(t *testing.T) {
	svc := service("ranges", objects.ClusterIPs("10.96.9.10"), objects.NodePort(30009), objects.LoadBalancerIngress("203.0.113.9", ""),
		objects.SourceRanges("192.0.2.0/24"))
	eps := endpointsOf(svc, s.pod2a)
	s.apply(t, svc, eps)
	lb := addrPort("203.0.113.9", svcPort)
	s.expectDropped(t, s.c.Ext, "tcp", lb)
	s.expectDropped(t, s.c.Ext, "udp", lb)
	onlyFrom(t, "tcp ext → NodePort 30009", askN(t, s.c.Ext, "tcp", netip.AddrPortFrom(node1v4, 30009), 1), s.pod2a)

	svc = svc.DeepCopy()
	svc.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24"}
	s.apply(t, svc, eps)
	for _, proto := range []string{"tcp", "udp"} {
		rs := askN(t, s.c.Ext, proto, lb, 3)
		onlyFrom(t, proto+" ext → "+lb.String(), rs, s.pod2a)
	}
}

// testHostToClusterIP: node1 itself reaches a ClusterIP; the traffic is
// masqueraded since it does not come from the cluster CIDR.
func (s *suite) testHostToClusterIP(t *testing.T) {
	svc := service("from-host", objects.ClusterIPs("10.96.10.10"))
	s.apply(t, svc, endpointsOf(svc, s.pod1b, s.pod2a))
	dst := addrPort("10.96.10.10", svcPort)
	for _, c := range []struct {
		proto string
		n     int
	}{{"tcp", 20}, {"udp", 5}} {
		rs := askN(t, s.c.Node1, c.proto, dst, c.n)
		what := fmt.Sprintf("%s node1 → %s", c.proto, dst)
		onlyFrom(t, what, rs, s.pod1b, s.pod2a)
		s.masqueraded(t, what, rs, plan.IPv4)
		if c.proto == "tcp" {
			reachedAll(t, what, rs, s.pod1b, s.pod2a)
		}
	}
}

// testIPv6: a dual-stack Service works in both families: pod1a reaches IPv6
// endpoints through the IPv6 ClusterIP (unmasqueraded), and ext reaches them
// through node1's IPv6 NodePort (masqueraded).
func (s *suite) testIPv6(t *testing.T) {
	svc := service("dual", objects.ClusterIPs("10.96.11.10", "fd00:10:96::11:10"), objects.NodePort(30011))
	s.apply(t, svc, endpointsOf(svc, s.pod1b, s.pod2a))

	dst := addrPort("fd00:10:96::11:10", svcPort)
	rs := askN(t, s.pod1a.NS, "tcp", dst, 20)
	what := "tcp pod1a → " + dst.String()
	onlyFrom(t, what, rs, s.pod1b, s.pod2a)
	reachedAll(t, what, rs, s.pod1b, s.pod2a)
	sourceIs(t, what, rs, s.pod1a.IPv6)

	rs = askN(t, s.pod1a.NS, "udp", dst, 5)
	onlyFrom(t, "udp pod1a → "+dst.String(), rs, s.pod1b, s.pod2a)
	sourceIs(t, "udp pod1a → "+dst.String(), rs, s.pod1a.IPv6)

	rs = askN(t, s.pod1a.NS, "tcp", addrPort("10.96.11.10", svcPort), 3)
	sourceIs(t, "tcp pod1a → 10.96.11.10:80", rs, s.pod1a.IPv4)

	np := netip.AddrPortFrom(testnet.Node1Addrs.LANv6, 30011)
	rs = askN(t, s.c.Ext, "tcp", np, 10)
	what = "tcp ext → " + np.String()
	onlyFrom(t, what, rs, s.pod1b, s.pod2a)
	s.masqueraded(t, what, rs, plan.IPv6)
}

// testPartialSync: changes applied by partial syncs from a plan.Tracker. A
// removed TCP endpoint gets no new connections; a UDP client whose endpoint
// is replaced keeps its socket and is answered by the new endpoint once the
// stale conntrack entries are cleaned; a Service that loses its last
// endpoint is rejected, and once deleted is no Service address at all.
func (s *suite) testPartialSync(t *testing.T) {
	tr := plan.NewTracker(nodeConfig())
	tr.SetNode(node1())
	shrink := service("shrink", objects.ClusterIPs("10.96.12.10"))
	swap := service("swap", objects.ClusterIPs("10.96.12.20"))
	tr.SetService(shrink)
	tr.SetService(swap)
	for _, sl := range endpointsOf(shrink, s.pod1b, s.pod2a, s.pod2b) {
		tr.SetSlice(sl)
	}
	for _, sl := range endpointsOf(swap, s.pod2a) {
		tr.SetSlice(sl)
	}
	p, ch := tr.Sync()
	if !ch.Full {
		t.Fatalf("first tracker sync is partial: %+v", ch)
	}
	s.sync(t, s.dp, p, ch)

	// partial applies the tracker's next sync, which must be partial and
	// touch only svc's ports.
	partial := func(svc *v1.Service) *plan.Plan {
		t.Helper()
		p, ch := tr.Sync()
		if ch.Full || len(ch.Keys) == 0 {
			t.Fatalf("tracker sync: %+v, want a partial sync with changes", ch)
		}
		for k := range ch.Keys {
			if k.Name != svc.Name {
				t.Fatalf("partial sync touches %v, want only %s", k, svc.Name)
			}
		}
		s.sync(t, s.dp, p, ch)
		return p
	}

	t.Run("TCP endpoint removed", func(t *testing.T) {
		dst := addrPort("10.96.12.10", svcPort)
		reachedAll(t, "tcp before", askN(t, s.pod1a.NS, "tcp", dst, 30), s.pod1b, s.pod2a, s.pod2b)
		tr.SetSlice(endpointsOf(shrink, s.pod1b, s.pod2a)[0])
		partial(shrink)
		rs := askN(t, s.pod1a.NS, "tcp", dst, 100)
		what := "tcp pod1a → " + dst.String() + " after removing pod2b"
		onlyFrom(t, what, rs, s.pod1b, s.pod2a)
		reachedAll(t, what, rs, s.pod1b, s.pod2a)
	})

	t.Run("UDP endpoint replaced", func(t *testing.T) {
		dst := addrPort("10.96.12.20", svcPort)
		uc, err := s.pod1a.NS.UDPConn(context.Background(), dst)
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		askUDP := func(want *testnet.Pod) {
			t.Helper()
			for i := range 3 {
				r, err := uc.Ask(askTimeout)
				if err != nil {
					t.Fatalf("udp %s → %s: request %d: %v\n%s", uc.LocalAddr(), dst, i+1, err, s.udpClientState(t, uc.LocalAddr()))
				}
				if r.Pod != want.Name || !r.SawAddrOf(uc.LocalAddr()) {
					t.Fatalf("udp %s → %s: answered by %s seeing %s, want %s seeing the client's address\n%s",
						uc.LocalAddr(), dst, r.Pod, r.Src, want.Name, s.udpClientState(t, uc.LocalAddr(), r.Src.Port()))
				}
			}
		}
		askUDP(s.pod2a)
		if n := countReplySrc(s.udpFlows(t, dst), s.pod2a.IPv4); n == 0 {
			t.Fatalf("no conntrack entry answered by pod2a while it serves the flow:\n%s", testnet.FlowList(s.udpFlows(t, dst)))
		}

		tr.SetSlice(endpointsOf(swap, s.pod2b)[0])
		p, ch := tr.Sync()
		if ch.Full || len(ch.Keys) == 0 {
			t.Fatalf("tracker sync: %+v, want a partial sync with changes", ch)
		}
		t.Logf("CleanUDP deleted %d entries", s.syncAndCleanUDP(t, p, ch))
		if flows := s.udpFlows(t, dst); countReplySrc(flows, s.pod2a.IPv4) > 0 {
			t.Errorf("conntrack entries answered by the removed pod2a remain:\n%s", testnet.FlowList(flows))
		}
		askUDP(s.pod2b) // the same socket, so the same 5-tuple
		if flows := s.udpFlows(t, dst); countReplySrc(flows, s.pod2a.IPv4) > 0 {
			t.Errorf("conntrack entries answered by the removed pod2a remain:\n%s", testnet.FlowList(flows))
		}
	})

	t.Run("last endpoint removed, then Service deleted", func(t *testing.T) {
		dst := addrPort("10.96.12.10", svcPort)
		tr.SetSlice(endpointsOf(shrink)[0])
		partial(shrink)
		expectRefused(t, s.pod1a.NS, "tcp", dst)
		expectRefused(t, s.pod1a.NS, "udp", dst)
		tr.DeleteService(shrink.Namespace, shrink.Name)
		partial(shrink)
		// No longer a Service address: node1 routes it to ext.
		s.expectNotAService(t, s.pod1a.NS, "tcp", dst)
		// swap is untouched.
		onlyFrom(t, "tcp pod1a → swap", askN(t, s.pod1a.NS, "tcp", addrPort("10.96.12.20", svcPort), 3), s.pod2b)
	})

	t.Run("UDP Service deleted, its conntrack entries too", func(t *testing.T) {
		dst := addrPort("10.96.12.20", svcPort)
		uc, err := s.pod1a.NS.UDPConn(context.Background(), dst)
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		if _, err := uc.Ask(askTimeout); err != nil {
			t.Fatalf("udp → %s: %v", dst, err)
		}
		if len(s.udpFlows(t, dst)) == 0 {
			t.Fatalf("no conntrack entry for the flow to %s", dst)
		}
		tr.DeleteService(swap.Namespace, swap.Name)
		p, ch := tr.Sync()
		if !conntrack.NeedsClean(p, ch, plan.IPv4) {
			t.Fatal("NeedsClean says no after a UDP Service was deleted")
		}
		s.syncAndCleanUDP(t, p, ch)
		if flows := s.udpFlows(t, dst); len(flows) > 0 {
			t.Errorf("conntrack entries to the deleted Service remain:\n%s", testnet.FlowList(flows))
		}
	})
}

// udpClientState describes, for a failure, node1's UDP conntrack entries
// of a client socket (also under the other source ports NAT may have given
// it) and node1's rules.
func (s *suite) udpClientState(t *testing.T, client netip.AddrPort, otherPorts ...uint16) string {
	t.Helper()
	flows := s.clientUDPFlows(t, client.Addr(), append(otherPorts, client.Port())...)
	return fmt.Sprintf("node1's UDP conntrack entries of %s (ports %v):\n%s\nnode1's rules:\n%s",
		client, append(otherPorts, client.Port()), testnet.FlowList(flows), s.dump(t))
}

// syncAndCleanUDP applies a tracker's sync on node1, then clears stale UDP
// conntrack entries there, removed ports included, as an agent does after
// each sync. It returns how many entries went.
func (s *suite) syncAndCleanUDP(t *testing.T, p *plan.Plan, ch plan.Changes) uint {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	var deleted uint
	err := s.c.Node1.Do(func() error {
		if err := s.dp.Sync(ctx, p, ch); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		var err error
		deleted, err = conntrack.New(nil).CleanUDP(p, plan.IPv4, slices.Collect(maps.Values(ch.Removed))...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return deleted
}

// testRestart: a new dataplane instance, whose first sync is full, takes
// over the table an earlier instance left, and converges to exactly what a
// sync of the same plan gave, even though the table held more (a Service
// since deleted). Clients keep their session affinity, traffic flows, and
// Cleanup leaves nothing.
func (s *suite) testRestart(t *testing.T) {
	web := service("restart-web", objects.ClusterIPs("10.96.13.10", "fd00:10:96::13:10"), objects.NodePort(30013),
		objects.LoadBalancerIngress("203.0.113.13", ""), objects.ExternalTrafficPolicyLocal(32013), objects.SourceRanges("198.51.100.0/24"))
	sticky := service("restart-sticky", objects.ClusterIPs("10.96.13.20"), objects.Affinity(0))
	empty := service("restart-empty", objects.ClusterIPs("10.96.13.30"))
	objs := []any{web, endpointsOf(web, s.pod1b, s.pod2a), sticky, endpointsOf(sticky, s.pod1b, s.pod2a, s.pod2b), empty}
	p := s.apply(t, objs...)
	stickyDst := addrPort("10.96.13.20", svcPort)
	pinned := askN(t, s.pod1a.NS, "tcp", stickyDst, 1)[0].Pod
	want := s.dump(t)
	if !strings.Contains(want, "10.96.13.10") {
		t.Fatalf("the dump does not show the ClusterIP 10.96.13.10:\n%s", want)
	}

	// The old instance's last sync holds one Service more.
	gone := service("restart-gone", objects.ClusterIPs("10.96.13.40"), objects.Affinity(0))
	s.apply(t, append(objs, gone, endpointsOf(gone, s.pod2b))...)
	askN(t, s.pod1a.NS, "tcp", addrPort("10.96.13.40", svcPort), 1)

	dp2 := s.opts.New()
	t.Cleanup(func() { s.cleanup(t, dp2) })
	start := time.Now()
	s.sync(t, dp2, p, plan.Changes{Full: true})
	t.Logf("first sync of the new instance: %v", time.Since(start).Round(time.Millisecond))
	if d := diff(want, s.dump(t)); d != "" {
		t.Errorf("the new instance's first sync differs from the old instance's sync of the same plan:\n%s", d)
	}

	rs := askN(t, s.pod1a.NS, "tcp", stickyDst, 10)
	onlyFrom(t, "tcp pod1a → "+stickyDst.String()+" after restart (affinity)", rs, s.c.Pods[pinned])
	onlyFrom(t, "tcp ext → LB after restart", askN(t, s.c.Ext, "tcp", addrPort("203.0.113.13", svcPort), 5), s.pod1b)
	onlyFrom(t, "tcp ext → NodePort after restart", askN(t, s.c.Ext, "tcp", netip.AddrPortFrom(node1v4, 30013), 5), s.pod1b)
	onlyFrom(t, "tcp pod1a → IPv6 ClusterIP after restart", askN(t, s.pod1a.NS, "tcp", addrPort("fd00:10:96::13:10", svcPort), 10), s.pod1b, s.pod2a)
	expectRefused(t, s.pod1a.NS, "tcp", addrPort("10.96.13.30", svcPort))
	s.expectNotAService(t, s.pod1a.NS, "tcp", addrPort("10.96.13.40", svcPort))

	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	if err := s.c.Node1.Do(func() error { return dp2.Cleanup(ctx) }); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	after := s.dump(t)
	if d := diff(s.baseline, after); d != "" {
		t.Errorf("cleanup left node1 different from before the first sync:\n%s", d)
	}
	if tables, err := s.c.Node1.Exec(ctx, "nft", "list", "tables"); err != nil || strings.Contains(tables, "svcproxy") {
		t.Errorf("nft list tables after cleanup: %q, %v", tables, err)
	}
}

// testBadInput: invalid Services are left out of the plan whole, and the
// valid ones next to them work in the kernel.
func (s *suite) testBadInput(t *testing.T) {
	good := service("good", objects.ClusterIPs("10.96.14.10"))
	goodNP := service("good-np", objects.ClusterIPs("10.96.14.30"), objects.NodePort(30014))
	badIP := service("bad-ip", objects.ClusterIPs("10.96.0.999"))
	badPort := service("bad-port", objects.ClusterIPs("10.96.14.20"), objects.Port("big", v1.ProtocolTCP, 70000, 0))
	p, errs := plan.Build(input(
		good, endpointsOf(good, s.pod2a),
		badIP,
		badPort, endpointsOf(badPort, s.pod2b),
		goodNP, endpointsOf(goodNP, s.pod1b),
	))
	if len(errs) != 2 {
		t.Errorf("plan errors: %v, want one for bad-ip and one for bad-port", errs)
	}
	s.sync(t, s.dp, p, plan.Changes{Full: true})

	onlyFrom(t, "tcp pod1a → good", askN(t, s.pod1a.NS, "tcp", addrPort("10.96.14.10", svcPort), 3), s.pod2a)
	onlyFrom(t, "udp pod1a → good", askN(t, s.pod1a.NS, "udp", addrPort("10.96.14.10", svcPort), 3), s.pod2a)
	onlyFrom(t, "tcp ext → good-np", askN(t, s.c.Ext, "tcp", netip.AddrPortFrom(node1v4, 30014), 3), s.pod1b)
	// bad-port's valid port 80 is not served either: never half-applied.
	s.expectNotAService(t, s.pod1a.NS, "tcp", addrPort("10.96.14.20", svcPort))
}

// testExternalIPs: ext reaches a Service's externalIPs, which ext routes to
// node1 and no interface holds: with externalTrafficPolicy Cluster every
// endpoint answers, masqueraded; with Local only node1's endpoint, which
// sees ext's address. A port the Service does not define is no Service
// address there.
func (s *suite) testExternalIPs(t *testing.T) {
	cluster := service("eip-cluster", objects.ClusterIPs("10.96.15.10"), objects.ExternalIPs("203.0.113.15"))
	local := service("eip-local", objects.ClusterIPs("10.96.15.20"), objects.ExternalIPs("203.0.113.16"), objects.ExternalTrafficPolicyLocal(0))
	s.apply(t, cluster, endpointsOf(cluster, s.pod1a, s.pod2a), local, endpointsOf(local, s.pod1b, s.pod2b))
	for _, proto := range []string{"tcp", "udp"} {
		dst := addrPort("203.0.113.15", svcPort)
		rs := askN(t, s.c.Ext, proto, dst, 20)
		what := fmt.Sprintf("%s ext → %s (Cluster)", proto, dst)
		onlyFrom(t, what, rs, s.pod1a, s.pod2a)
		reachedAll(t, what, rs, s.pod1a, s.pod2a)
		s.masqueraded(t, what, rs, plan.IPv4)

		dst = addrPort("203.0.113.16", svcPort)
		rs = askN(t, s.c.Ext, proto, dst, 10)
		what = fmt.Sprintf("%s ext → %s (Local)", proto, dst)
		onlyFrom(t, what, rs, s.pod1b)
		sourceIs(t, what, rs, extv4)
	}
	s.expectNotAService(t, s.c.Ext, "tcp", addrPort("203.0.113.15", 81))
}

// testTopologyHints: hints narrow a pod's traffic to a ClusterIP. Zone
// hints, with one of node2's endpoints lent to node1's zone: only the
// endpoints for zone-a answer. Node hints: only node1's own endpoint.
func (s *suite) testTopologyHints(t *testing.T) {
	zonal := service("zonal", objects.ClusterIPs("10.96.16.10"))
	zonalSlices := endpointsOf(zonal, s.pod1b, s.pod2a, s.pod2b)
	for i, zone := range []string{"zone-a", "zone-a", "zone-b"} {
		objects.HintZones(zone)(&zonalSlices[0].Endpoints[i])
	}
	nodal := service("nodal", objects.ClusterIPs("10.96.16.20"))
	nodalSlices := endpointsOf(nodal, s.pod1b, s.pod2a)
	for i, node := range []string{"node1", "node2"} {
		objects.HintNodes(node)(&nodalSlices[0].Endpoints[i])
	}
	s.apply(t, zonal, zonalSlices, nodal, nodalSlices)

	dst := addrPort("10.96.16.10", svcPort)
	rs := askN(t, s.pod1a.NS, "tcp", dst, 30)
	what := "tcp pod1a → " + dst.String() + " (zone hints)"
	onlyFrom(t, what, rs, s.pod1b, s.pod2a)
	reachedAll(t, what, rs, s.pod1b, s.pod2a)
	t.Logf("%s: %v", what, byPod(rs))

	dst = addrPort("10.96.16.20", svcPort)
	onlyFrom(t, "tcp pod1a → "+dst.String()+" (node hints)", askN(t, s.pod1a.NS, "tcp", dst, 10), s.pod1b)
}

// testSCTP: an SCTP Service with one endpoint, pod2a. This kernel has no
// SCTP sockets: a raw socket sends an SCTP INIT (with its CRC32c, or
// conntrack would call it invalid and NAT would skip it) and one in pod2a
// reads what arrives. Through the ClusterIP it comes from pod1a's own
// address and port; through node1's NodePort from ext, masqueraded; both
// times DNATed to pod2a's address and port, the checksum redone.
func (s *suite) testSCTP(t *testing.T) {
	svc := objects.Service("default", "sctp", objects.Port("sctp", v1.ProtocolSCTP, svcPort, 0), targetPodPort,
		objects.ClusterIPs("10.96.17.10"), objects.NodePort(30017))
	objects.IPFamilies("")(svc)
	s.apply(t, svc, endpointsOf(svc, s.pod2a))
	r, err := s.pod2a.NS.ReadSCTP()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := netip.AddrPortFrom(s.pod2a.IPv4, podPort)
	for i, c := range []struct {
		from *testnet.NS
		dst  netip.AddrPort
		src  netip.Addr // as pod2a sees it
	}{
		{s.pod1a.NS, addrPort("10.96.17.10", svcPort), s.pod1a.IPv4},
		{s.c.Ext, netip.AddrPortFrom(node1v4, 30017), node1v4},
	} {
		srcPort := uint16(40000 + i)
		if err := c.from.SendSCTPInit(srcPort, c.dst); err != nil {
			t.Fatal(err)
		}
		p, err := r.Next(askTimeout)
		what := fmt.Sprintf("sctp INIT %s → %s", c.from, c.dst)
		switch {
		case err != nil:
			t.Errorf("%s: %v", what, err)
		case p.Dst != want || p.Src.Addr() != c.src || p.FirstChunk != 1 || !p.ChecksumOK:
			t.Errorf("%s: pod2a got %+v, want an INIT from %s to %s with a valid checksum", what, p, c.src, want)
		case c.from != s.c.Ext && p.Src.Port() != srcPort:
			t.Errorf("%s: source port %d, want %d (not masqueraded)", what, p.Src.Port(), srcPort)
		default:
			t.Logf("%s: pod2a got it from %s to %s", what, p.Src, p.Dst)
		}
	}
}
