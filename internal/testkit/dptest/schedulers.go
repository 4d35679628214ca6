package dptest

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// The schedulers a Service chooses with plan.AnnotationScheduler, for the
// dataplanes that express them (Options.Capabilities); a dataplane that
// cannot skips them, saying so.

// expresses skips t unless the dataplane expresses scheduler.
func (s *suite) expresses(t *testing.T, scheduler string) {
	t.Helper()
	if !s.opts.Capabilities.Expresses(scheduler) {
		t.Skipf("the %q dataplane does not express the %s scheduler (Options.Capabilities)", s.opts.Capabilities.Dataplane, scheduler)
	}
}

// testRoundRobin: with the rr scheduler, new connections take the
// endpoints in strict turn, whichever client opens them: pods alternating
// over TCP, one pod over UDP, ext through the NodePort.
func (s *suite) testRoundRobin(t *testing.T) {
	s.expresses(t, "rr")
	svc := service("round-robin", objects.ClusterIPs("10.96.18.10"), objects.NodePort(30018),
		objects.Annotation(plan.AnnotationScheduler, "rr"))
	s.apply(t, svc, endpointsOf(svc, s.pod1b, s.pod2a, s.pod2b))
	eps := []*testnet.Pod{s.pod1b, s.pod2a, s.pod2b}
	dst := addrPort("10.96.18.10", svcPort)

	if !s.knownFailure(t, "RoundRobin/two clients") {
		var rs []testnet.Reply
		for i := range 12 {
			client := []*testnet.Pod{s.pod1a, s.pod1b}[i%2]
			rs = append(rs, askN(t, client.NS, "tcp", dst, 1)...)
		}
		rotates(t, "tcp pod1a and pod1b in turn → "+dst.String(), rs, eps...)
	}
	rotates(t, "udp pod1a → "+dst.String(), askN(t, s.pod1a.NS, "udp", dst, 9), eps...)
	np := netip.AddrPortFrom(node1v4, 30018)
	rotates(t, "tcp ext → "+np.String(), askN(t, s.c.Ext, "tcp", np, 9), eps...)
}

// rotates fails t unless the replies came from the pods in a strict cycle:
// the first len(pods) from each of them once, and every later one from the
// pod that answered len(pods) replies earlier.
func rotates(t *testing.T, what string, rs []testnet.Reply, pods ...*testnet.Pod) {
	t.Helper()
	n := len(pods)
	order := make([]string, len(rs))
	for i, r := range rs {
		order[i] = r.Pod
	}
	onlyFrom(t, what, rs, pods...)
	reachedAll(t, what, rs[:min(n, len(rs))], pods...)
	for i := n; i < len(rs); i++ {
		if rs[i].Pod != rs[i-n].Pod {
			t.Errorf("%s: reply %d from %s, want %s as %d replies earlier: not a strict rotation %v", what, i+1, rs[i].Pod, rs[i-n].Pod, n, order)
			return
		}
	}
	t.Logf("%s: %v", what, order)
}

// testSourceHash: with the sh scheduler, every connection from one source
// goes to one endpoint, and each source has its own: pod1a, pod1b and
// node1 to the ClusterIP, ext to the NodePort, over TCP and UDP.
func (s *suite) testSourceHash(t *testing.T) {
	s.expresses(t, "sh")
	svc := service("source-hash", objects.ClusterIPs("10.96.19.10"), objects.NodePort(30019),
		objects.Annotation(plan.AnnotationScheduler, "sh"))
	s.apply(t, svc, endpointsOf(svc, s.pod1b, s.pod2a, s.pod2b))
	dst := addrPort("10.96.19.10", svcPort)
	got := map[string]string{} // what: the endpoint
	for _, c := range []struct {
		name string
		ns   *testnet.NS
		dst  netip.AddrPort
	}{
		{"pod1a", s.pod1a.NS, dst},
		{"pod1b", s.pod1b.NS, dst},
		{"node1", s.c.Node1, dst},
		{"ext", s.c.Ext, netip.AddrPortFrom(node1v4, 30019)},
	} {
		for _, proto := range []string{"tcp", "udp"} {
			what := fmt.Sprintf("%s %s → %s", proto, c.name, c.dst)
			rs := askN(t, c.ns, proto, c.dst, 10)
			onlyFrom(t, what, rs, s.pod1b, s.pod2a, s.pod2b)
			counts := byPod(rs)
			if len(counts) != 1 {
				t.Errorf("%s: spread over %v, want one endpoint for one source", what, counts)
			}
			got[what] = rs[0].Pod
		}
	}
	t.Logf("source → endpoint: %v", got)
}
