// Package dptest is the kernel test suite every dataplane must pass: real
// TCP and UDP traffic through the real kernel, in a throwaway cluster of
// network namespaces (testkit/testnet). node1 runs the dataplane under test;
// node2 runs no rules and only routes to its pods.
//
// A dataplane's kernel_test.go runs it with a constructor:
//
//	dptest.Run(t, nftables.Capabilities, func() dataplane.Dataplane { return nftables.New(nftables.Options{}) })
//
// The suite skips itself unless it runs as root with ip and nft available.
// Every subtest programs node1 with a full sync of its own small set of
// objects (partial syncs where it says so), so subtests can run alone with
// -run. Everything the suite creates is removed when it ends, also on
// failure: the dataplane's Cleanup runs inside node1, then testnet deletes
// the namespaces.
package dptest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// Timeouts. Every request waits at most askTimeout; requests that must be
// dropped wait dropTimeout.
const (
	askTimeout  = 2 * time.Second
	dropTimeout = 500 * time.Millisecond
	syncTimeout = 20 * time.Second
)

// Ports: every pod serves on podPort, every Service port is svcPort.
const (
	podPort = 8080
	svcPort = 80
)

// Options adapt the suite to a dataplane.
type Options struct {
	// New returns a fresh dataplane instance.
	New func() dataplane.Dataplane
	// Dump returns, as text, the kernel state the dataplane owns on node
	// (node1). The restart test requires a new instance's first sync to
	// leave the same dump as the old instance, and after Cleanup the dump
	// must be what it was before the first sync. Element timeouts counting
	// down ("expires 2h59m58s") are ignored. Default: `nft list ruleset`,
	// with tables, objects and set elements sorted (nftables.Listing.Canonical).
	Dump func(ctx context.Context, node *testnet.NS) (string, error)
	// Capabilities are what the dataplane can write: the plan resolves
	// each Service's scheduler against them, and the scheduler subtests
	// run for the schedulers it expresses.
	Capabilities plan.Capabilities
	// KnownFailures names checks this dataplane is known to fail now and
	// then, with what is known of why: they are logged, not run, and the
	// open defect stays in sight. Names: "RoundRobin/two clients".
	KnownFailures map[string]string
}

// knownFailure reports whether check is a known failure of the
// dataplane, logging it if so.
func (s *suite) knownFailure(t *testing.T, check string) bool {
	t.Helper()
	why, ok := s.opts.KnownFailures[check]
	if ok {
		t.Logf("KNOWN FAILURE, not run: %s: %s", check, why)
	}
	return ok
}

// Run runs the suite against the dataplanes newDP returns, which can
// write what caps say.
func Run(t *testing.T, caps plan.Capabilities, newDP func() dataplane.Dataplane) {
	RunOptions(t, Options{New: newDP, Capabilities: caps})
}

// RunOptions runs the suite with opts.
func RunOptions(t *testing.T, opts Options) {
	requireKernel(t)
	if opts.Dump == nil {
		opts.Dump = nftRuleset
	}
	s := newSuite(t, opts)
	for _, st := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"ClusterIPSpread", s.testClusterIPSpread},
		{"NodePortCluster", s.testNodePortCluster},
		{"ExternalLocal", s.testExternalLocal},
		{"ExternalLocalNoLocalEndpoint", s.testExternalLocalNoLocalEndpoint},
		{"NoEndpoints", s.testNoEndpoints},
		{"InternalLocal", s.testInternalLocal},
		{"SessionAffinity", s.testSessionAffinity},
		{"Hairpin", s.testHairpin},
		{"SourceRanges", s.testSourceRanges},
		{"HostToClusterIP", s.testHostToClusterIP},
		{"IPv6", s.testIPv6},
		{"PartialSync", s.testPartialSync},
		{"Restart", s.testRestart},
		{"BadInput", s.testBadInput},
		{"ExternalIPs", s.testExternalIPs},
		{"TopologyHints", s.testTopologyHints},
		{"SCTP", s.testSCTP},
		{"RoundRobin", s.testRoundRobin},
		{"SourceHash", s.testSourceHash},
	} {
		start := time.Now()
		t.Run(st.name, st.fn)
		t.Logf("%-30s %v", st.name, time.Since(start).Round(time.Millisecond))
	}
}

func requireKernel(t *testing.T) {
	t.Helper()
	testnet.RequireKernel(t, "nft")
}

// nftRuleset is the default Dump: node's `nft list ruleset` in canonical
// form (see nftables.Listing.Canonical).
func nftRuleset(ctx context.Context, node *testnet.NS) (string, error) {
	out, err := node.Exec(ctx, "nft", "list", "ruleset")
	if err != nil {
		return "", err
	}
	return nftables.CanonicalListing(out)
}

// suite is the cluster and the dataplane instance the subtests share.
type suite struct {
	opts     Options
	c        *testnet.Cluster
	dp       dataplane.Dataplane
	baseline string // node1's dump before the first sync

	pod1a, pod1b, pod2a, pod2b *testnet.Pod
}

func newSuite(t *testing.T, opts Options) *suite {
	start := time.Now()
	c := testnet.New(t, testnet.Options{})
	s := &suite{opts: opts, c: c, dp: opts.New(),
		pod1a: c.Pods["pod1a"], pod1b: c.Pods["pod1b"], pod2a: c.Pods["pod2a"], pod2b: c.Pods["pod2b"]}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A node has a default route, here towards ext (which does not
	// forward, so whatever takes it is lost, but counts it: see strays).
	// Without one, traffic to a Service address that no rule DNATs would
	// fail routing (ICMP network unreachable) before any reject or drop
	// rule saw it, and the node itself could not even connect to a
	// ClusterIP. (A packet node1 forwards by that route without DNAT goes
	// back out the LAN port it came in by; testnet's nodes send ext no
	// ICMP redirect for it.)
	for _, args := range [][]string{
		{"ip", "-4", "route", "add", "default", "via", testnet.ExtIPv4.String()},
		{"ip", "-6", "route", "add", "default", "via", testnet.ExtIPv6.String()},
	} {
		if _, err := c.Node1.Exec(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Ext.Exec(ctx, "nft", countStrays); err != nil {
		t.Fatal(err)
	}
	for _, p := range c.PodList {
		p.Serve(t, podPort)
	}
	var err error
	if s.baseline, err = opts.Dump(ctx, c.Node1); err != nil {
		t.Fatalf("dump before the first sync: %v", err)
	}
	// Registered after the cluster's own cleanup, so it runs first, while
	// node1 still exists.
	t.Cleanup(func() { s.cleanup(t, s.dp) })
	t.Logf("cluster ready in %v", time.Since(start).Round(time.Millisecond))
	return s
}

// cleanup runs dp's Cleanup in node1 and checks that node1 is back to what
// it was before the first sync.
func (s *suite) cleanup(t *testing.T, dp dataplane.Dataplane) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	if err := s.c.Node1.Do(func() error { return dp.Cleanup(ctx) }); err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	after, err := s.opts.Dump(ctx, s.c.Node1)
	if err != nil {
		t.Errorf("dump after cleanup: %v", err)
		return
	}
	if d := diff(s.baseline, after); d != "" {
		t.Errorf("cleanup left node1 different from before the first sync:\n%s", d)
	}
}

// nodeConfig is node1's proxy configuration.
func nodeConfig() plan.Config {
	return plan.Config{
		NodeName:     "node1",
		ClusterCIDRs: []netip.Prefix{testnet.ClusterCIDRv4, testnet.ClusterCIDRv6},
		NodeIPs:      testnet.Node1Addrs.IPs(),
	}
}

// zones of the nodes; no endpoint carries hints, so topology never narrows.
var zones = map[string]string{"node1": "zone-a", "node2": "zone-b"}

func node1() *v1.Node { return objects.Node("node1", zones["node1"]) }

// input collects Services and EndpointSlices (single or in slices) into a
// plan input for node1.
func input(objs ...any) plan.Input {
	in := plan.Input{Node: node1(), Config: nodeConfig()}
	for _, o := range objs {
		switch o := o.(type) {
		case *v1.Service:
			in.Services = append(in.Services, o)
		case *discovery.EndpointSlice:
			in.Slices = append(in.Slices, o)
		case []*discovery.EndpointSlice:
			in.Slices = append(in.Slices, o...)
		default:
			panic(fmt.Sprintf("dptest: unexpected object %T", o))
		}
	}
	return in
}

// apply plans objs and programs node1 with a full sync of the shared
// dataplane. The objects must be valid.
func (s *suite) apply(t *testing.T, objs ...any) *plan.Plan {
	t.Helper()
	in := input(objs...)
	in.Config.Dataplane = s.opts.Capabilities
	p, errs := plan.Build(in)
	if len(errs) > 0 {
		t.Fatalf("invalid test objects: %v", errors.Join(errs...))
	}
	s.sync(t, s.dp, p, plan.Changes{Full: true})
	return p
}

// sync runs dp.Sync inside node1.
func (s *suite) sync(t *testing.T, dp dataplane.Dataplane, p *plan.Plan, ch plan.Changes) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	if err := s.c.Node1.Do(func() error { return dp.Sync(ctx, p, ch) }); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func (s *suite) dump(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := s.opts.Dump(ctx, s.c.Node1)
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return d
}

// ---- Objects ----

// service returns a ClusterIP Service in namespace "default" with two ports,
// "tcp" 80/TCP and "udp" 80/UDP, both targeting podPort, changed by opts
// (which set its ClusterIPs, the first primary). Its IP families are those
// of its ClusterIPs, and two of them require dual-stack.
func service(name string, opts ...objects.ServiceOption) *v1.Service {
	svc := objects.Service("default", name, append([]objects.ServiceOption{
		objects.Port("tcp", v1.ProtocolTCP, svcPort, 0),
		objects.Port("udp", v1.ProtocolUDP, svcPort, 0),
		targetPodPort,
	}, opts...)...)
	policy := v1.IPFamilyPolicy("")
	if len(svc.Spec.ClusterIPs) > 1 {
		policy = v1.IPFamilyPolicyRequireDualStack
	}
	objects.IPFamilies(policy)(svc)
	return svc
}

// targetPodPort makes every port added so far target podPort.
func targetPodPort(svc *v1.Service) {
	for i := range svc.Spec.Ports {
		svc.Spec.Ports[i].TargetPort = intstr.FromInt32(podPort)
	}
}

// endpointsOf returns svc's EndpointSlices: one per family of its
// ClusterIPs, named "<svc>-ipv4" / "<svc>-ipv6", holding the pods' addresses
// of that family, ready, with their node and zone, on podPort for every port
// of svc.
func endpointsOf(svc *v1.Service, pods ...*testnet.Pod) []*discovery.EndpointSlice {
	var out []*discovery.EndpointSlice
	for _, ip := range svc.Spec.ClusterIPs {
		at, suffix := discovery.AddressTypeIPv4, "-ipv4"
		if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
			at, suffix = discovery.AddressTypeIPv6, "-ipv6"
		}
		var ports []discovery.EndpointPort
		for _, p := range svc.Spec.Ports {
			ports = append(ports, objects.EndpointPort(p.Name, p.Protocol, podPort))
		}
		var eps []discovery.Endpoint
		for _, pod := range pods {
			addr := pod.IPv4
			if at == discovery.AddressTypeIPv6 {
				addr = pod.IPv6
			}
			eps = append(eps, objects.Endpoint(addr.String(),
				objects.Conditions(true, true, false), objects.OnNode(pod.Node), objects.InZone(zones[pod.Node])))
		}
		out = append(out, objects.Slice(svc.Namespace, svc.Name+suffix, svc.Name, at, ports, eps...))
	}
	return out
}

func addrPort(ip string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(ip), port)
}

// masqueraded fails t unless every backend saw node1's own address towards
// it, as masquerading (SNAT to the outgoing interface's address) gives: the
// gateway address of its veth for node1's pods, node1's LAN address for
// node2's. Unmasqueraded traffic from node1 itself would show its LAN
// address to node1's pods.
func (s *suite) masqueraded(t *testing.T, what string, rs []testnet.Reply, f plan.Family) {
	t.Helper()
	bad := map[string]int{}
	for _, r := range rs {
		want := testnet.Node1Addrs.LANv4
		if p := s.c.Pods[r.Pod]; p != nil && p.Node == "node1" {
			want = testnet.Node1Addrs.GatewayV4()
		}
		if f == plan.IPv6 {
			want = testnet.Node1Addrs.LANv6
			if p := s.c.Pods[r.Pod]; p != nil && p.Node == "node1" {
				want = testnet.Node1Addrs.GatewayV6()
			}
		}
		if r.Src.Addr() != want {
			bad[fmt.Sprintf("%s saw %s, want %s", r.Pod, r.Src.Addr(), want)]++
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s: not masqueraded to node1: %v", what, bad)
	}
}

// ---- Requests ----

// askN sends n requests from ns to dst, each from a new socket (so a new
// connection and a new endpoint choice), and fails t unless all are answered.
func askN(t *testing.T, ns *testnet.NS, proto string, dst netip.AddrPort, n int) []testnet.Reply {
	t.Helper()
	out := make([]testnet.Reply, 0, n)
	for i := range n {
		r, err := ns.Ask(context.Background(), proto, dst, askTimeout)
		if err != nil {
			t.Fatalf("%s %s → %s: request %d of %d: %v", ns, proto, dst, i+1, n, err)
		}
		out = append(out, r)
	}
	return out
}

// byPod counts replies per answering pod.
func byPod(rs []testnet.Reply) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		m[r.Pod]++
	}
	return m
}

// onlyFrom fails t unless every reply came from one of pods.
func onlyFrom(t *testing.T, what string, rs []testnet.Reply, pods ...*testnet.Pod) {
	t.Helper()
	for pod, n := range byPod(rs) {
		if !slices.ContainsFunc(pods, func(p *testnet.Pod) bool { return p.Name == pod }) {
			t.Errorf("%s: %d replies from %s, which is not an expected endpoint %v", what, n, pod, podNames(pods))
		}
	}
}

// reachedAll fails t unless every pod answered at least once.
func reachedAll(t *testing.T, what string, rs []testnet.Reply, pods ...*testnet.Pod) {
	t.Helper()
	counts := byPod(rs)
	for _, p := range pods {
		if counts[p.Name] == 0 {
			t.Errorf("%s: %s never answered in %d requests (%v)", what, p.Name, len(rs), counts)
		}
	}
}

// sourceIs fails t unless every backend saw want as the client's address.
func sourceIs(t *testing.T, what string, rs []testnet.Reply, want netip.Addr) {
	t.Helper()
	bad := map[string]int{}
	for _, r := range rs {
		if r.Src.Addr() != want {
			bad[r.Pod+" saw "+r.Src.Addr().String()]++
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s: backends saw %v, want %s", what, bad, want)
	}
}

func podNames(pods []*testnet.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// countStrays sets up, in ext, a counter of the packets that reach it for
// an address it does not have: what node1 sent out by its default route,
// as it does with any destination that no rule of ours DNATs, drops or
// rejects. Broadcast and multicast frames do not count.
const countStrays = `add table inet strays
add counter inet strays seen
add chain inet strays prerouting { type filter hook prerouting priority raw; policy accept; }
add rule inet strays prerouting meta pkttype != host return
add rule inet strays prerouting fib daddr type local return
add rule inet strays prerouting counter name seen`

var strayPackets = regexp.MustCompile(`packets (\d+) bytes`)

// strays is how many packets have reached ext by node1's default route.
func (s *suite) strays(t *testing.T) string {
	t.Helper()
	out, err := s.c.Ext.Exec(context.Background(), "nft", "list", "counter", "inet", "strays", "seen")
	m := strayPackets.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("reading ext's stray packet counter: %v\n%s", err, out)
	}
	return m[1]
}

// expectDropped fails t unless a request from ns to dst is dropped on
// node1: it times out (no answer, no rejection), and nothing left node1 by
// its default route (which would also time out, ext being no router).
func (s *suite) expectDropped(t *testing.T, ns *testnet.NS, proto string, dst netip.AddrPort) {
	t.Helper()
	before := s.strays(t)
	r, err := ns.Ask(context.Background(), proto, dst, dropTimeout)
	switch {
	case err == nil:
		t.Errorf("%s %s → %s: answered by %s (saw %s), want dropped", ns, proto, dst, r.Pod, r.Src)
	case !testnet.IsTimeout(err) || testnet.IsRefused(err):
		t.Errorf("%s %s → %s: %v, want a timeout (dropped)", ns, proto, dst, err)
	case s.strays(t) != before:
		t.Errorf("%s %s → %s: no answer, but the request left node1 by its default route (ext counted it): not dropped by a rule", ns, proto, dst)
	}
}

// expectNotAService fails t unless node1 treats dst as no Service address:
// the request is not answered, and leaves node1 by its default route.
func (s *suite) expectNotAService(t *testing.T, ns *testnet.NS, proto string, dst netip.AddrPort) {
	t.Helper()
	before := s.strays(t)
	if r, err := ns.Ask(context.Background(), proto, dst, dropTimeout); err == nil {
		t.Errorf("%s %s → %s: answered by %s, want no Service there", ns, proto, dst, r.Pod)
		return
	}
	// The request reached ext before the client gave up on it.
	if s.strays(t) == before {
		t.Errorf("%s %s → %s: not answered, and nothing left node1 by its default route: a rule stopped it", ns, proto, dst)
	}
}

// expectRefused fails t unless a request from ns to dst is refused (TCP
// reset or ICMP port unreachable).
func expectRefused(t *testing.T, ns *testnet.NS, proto string, dst netip.AddrPort) {
	t.Helper()
	start := time.Now()
	r, err := ns.Ask(context.Background(), proto, dst, askTimeout)
	switch {
	case err == nil:
		t.Errorf("%s %s → %s: answered by %s, want refused", ns, proto, dst, r.Pod)
	case !testnet.IsRefused(err):
		t.Errorf("%s %s → %s: %v after %v, want refused", ns, proto, dst, err, time.Since(start).Round(time.Millisecond))
	}
}

// ---- Conntrack ----

// udpFlows lists node1's IPv4 UDP conntrack entries whose original
// destination is dst.
func (s *suite) udpFlows(t *testing.T, dst netip.AddrPort) []*netlink.ConntrackFlow {
	t.Helper()
	return s.udpFlowsWhere(t, func(f *netlink.ConntrackFlow) bool { return testnet.OrigDst(f) == dst })
}

// clientUDPFlows lists node1's IPv4 UDP conntrack entries sent from client
// (its address with any of ports), or answered to it: those of one client
// socket, also when NAT gave it another source port.
func (s *suite) clientUDPFlows(t *testing.T, client netip.Addr, ports ...uint16) []*netlink.ConntrackFlow {
	t.Helper()
	return s.udpFlowsWhere(t, func(f *netlink.ConntrackFlow) bool {
		src, _ := netip.AddrFromSlice(f.Forward.SrcIP)
		replyDst, _ := netip.AddrFromSlice(f.Reverse.DstIP)
		return src.Unmap() == client && slices.Contains(ports, f.Forward.SrcPort) ||
			replyDst.Unmap() == client && slices.Contains(ports, f.Reverse.DstPort)
	})
}

// udpFlowsWhere lists node1's IPv4 UDP conntrack entries that keep accepts.
func (s *suite) udpFlowsWhere(t *testing.T, keep func(*netlink.ConntrackFlow) bool) []*netlink.ConntrackFlow {
	t.Helper()
	flows, err := s.c.Node1.UDPFlows(unix.AF_INET, keep)
	if err != nil {
		t.Fatalf("listing conntrack entries: %v", err)
	}
	return flows
}

// ---- Dumps ----

var expires = regexp.MustCompile(` expires [0-9hmsd.]+`)

// diff compares two dumps line by line, ignoring countdowns of element
// timeouts, and describes the lines only one of them has ("" if none).
func diff(a, b string) string {
	la := strings.Split(expires.ReplaceAllString(a, ""), "\n")
	lb := strings.Split(expires.ReplaceAllString(b, ""), "\n")
	if slices.Equal(la, lb) {
		return ""
	}
	count := map[string]int{}
	for _, l := range la {
		count[l]++
	}
	for _, l := range lb {
		count[l]--
	}
	var out strings.Builder
	for _, l := range la {
		if count[l] > 0 {
			fmt.Fprintf(&out, "- %s\n", l)
			count[l]--
		}
	}
	for _, l := range lb {
		if count[l] < 0 {
			fmt.Fprintf(&out, "+ %s\n", l)
			count[l]++
		}
	}
	if out.Len() == 0 {
		out.WriteString("(same lines, different order)\n")
	}
	fmt.Fprintf(&out, "--- before:\n%s\n--- after:\n%s", a, b)
	return out.String()
}

// countReplySrc counts the entries whose reply comes from src: the
// endpoint a DNATed flow was sent to.
func countReplySrc(flows []*netlink.ConntrackFlow, src netip.Addr) int {
	n := 0
	for _, f := range flows {
		if testnet.ReplySrc(f).Addr() == src {
			n++
		}
	}
	return n
}
