package ipvs

import (
	"context"
	"maps"
	"math/rand"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

var (
	clusterIP = netip.MustParseAddr("10.96.0.10")
	node1IP   = testnet.Node1Addrs.LANv4
)

// nodePortSets are the sets the test's masquerading glue matches.
func nodePortSets(tcp, udp uint16) []Set {
	return []Set{
		{Name: "KUBE-NODE-PORT-TCP", Type: BitmapPort, Entries: []Entry{{Port: tcp, Comment: "default/web:http"}}},
		{Name: "KUBE-NODE-PORT-UDP", Type: BitmapPort, Entries: []Entry{{Port: udp, Comment: "default/web:dns"}}},
	}
}

// webState is one Service as kube-proxy's IPVS mode lays it out: its
// ClusterIP on kube-ipvs0, a virtual server per ClusterIP and node IP and
// port, TCP and UDP, all rr over the three endpoints.
func (c *ipvsCluster) webState() State {
	vs := func(addr netip.Addr, proto Protocol, port uint16) VirtualServer {
		return VirtualServer{Address: addr, Protocol: proto, Port: port, Scheduler: "rr", Reals: c.reals(servePort)}
	}
	return State{
		Addresses: []netip.Addr{clusterIP},
		Services: []VirtualServer{
			vs(clusterIP, TCP, 80), vs(clusterIP, UDP, 53),
			vs(node1IP, TCP, 30080), vs(node1IP, UDP, 30053),
		},
		Sets: append(nodePortSets(30080, 30053), Set{Name: "KUBE-CLUSTER-IP", Type: HashIPPort, Family: IPv4, Entries: []Entry{
			{IP: clusterIP, Protocol: TCP, Port: 80, Comment: "default/web:http"},
			{IP: clusterIP, Protocol: UDP, Port: 53, Comment: "default/web:dns"},
		}}),
	}
}

// ask asks dst once from ns over proto, on a new socket each time, and
// returns the reply.
func ask(t *testing.T, ns *testnet.NS, proto string, dst netip.AddrPort) testnet.Reply {
	t.Helper()
	r, err := ns.Ask(context.Background(), proto, dst, 3*time.Second)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", proto, dst, ns, err)
	}
	return r
}

// TestKernel runs the kernel tests on one cluster; each applies its own
// State first, so none depends on another's.
func TestKernel(t *testing.T) {
	c := newIPVSCluster(t)
	t.Run("traffic", func(t *testing.T) { testTraffic(t, c) })
	t.Run("matches fake", func(t *testing.T) { testMatchesFake(t, c) })
	t.Run("graceful removal", func(t *testing.T) { testGracefulRemoval(t, c) })
	t.Run("schedulers", func(t *testing.T) { testSchedulers(t, c) })
	t.Run("cleanup", func(t *testing.T) { testCleanup(t, c) })
}

// testCleanup: Cleanup removes every virtual server, the interface and
// the sets, and leaves what is not ours.
func testCleanup(t *testing.T, c *ipvsCluster) {
	k := c.kernel(t, Options{})
	c.apply(t, k, c.webState())
	ctx := context.Background()
	for _, args := range [][]string{
		{"iptables", "-t", "nat", "-F"}, // the glue holds the node port sets
		{"ipset", "create", "OTHER-SET", "hash:ip"},
	} {
		if _, err := c.Node1.Exec(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if dump, err := k.Dump(ctx); err != nil || dump != "" {
		t.Errorf("after Cleanup: %v\n%s", err, dump)
	}
	if out, err := c.Node1.Exec(ctx, "ipset", "list", "-n"); err != nil || strings.TrimSpace(out) != "OTHER-SET" {
		t.Errorf("sets after Cleanup: %v %q, want only OTHER-SET", err, out)
	}
	if out, err := c.Node1.Exec(ctx, "ip", "link", "show", "kube-ipvs0"); err == nil {
		t.Errorf("kube-ipvs0 is still there: %s", out)
	}
}

// testTraffic sends real TCP and UDP through IPVS to a ClusterIP
// (from a pod) and a NodePort (from outside), checks ipvsadm's view of the
// layout, then changes the state and checks that only the difference is
// applied and traffic follows it.
func testTraffic(t *testing.T, c *ipvsCluster) {
	k := c.kernel(t, Options{})
	cli := c.Pods["cli"]
	s := c.webState()
	c.apply(t, k, s)
	listing := c.ipvsadm(t)
	t.Logf("ipvsadm -Ln in node1:\n%s", listing)
	for _, want := range []string{
		`TCP  10\.96\.0\.10:80 rr\n(  -> 10\.244\.\d\.\d:8080 +Masq +1 .*\n){3}`,
		`UDP  10\.96\.0\.10:53 rr\n(  -> 10\.244\.\d\.\d:8080 +Masq +1 .*\n){3}`,
		`TCP  198\.51\.100\.1:30080 rr\n`,
		`UDP  198\.51\.100\.1:30053 rr\n`,
	} {
		if !regexp.MustCompile(want).MatchString(listing) {
			t.Errorf("ipvsadm -Ln lacks %q", want)
		}
	}

	for _, proto := range []string{"tcp", "udp"} {
		port := map[string]uint16{"tcp": 80, "udp": 53}[proto]
		var got []string
		for range 6 {
			r := ask(t, cli.NS, proto, netip.AddrPortFrom(clusterIP, port))
			if r.Src.Addr() != cli.IPv4 {
				t.Errorf("%s ClusterIP: endpoint saw %s, want the pod's own address %s", proto, r.Src, cli.IPv4)
			}
			got = append(got, r.Pod)
		}
		checkRotation(t, proto+" ClusterIP rr", got, 3)

		nodePort := map[string]uint16{"tcp": 30080, "udp": 30053}[proto]
		seen := map[string]bool{}
		for range 3 {
			r := ask(t, c.Ext, proto, netip.AddrPortFrom(node1IP, nodePort))
			// Masqueraded to node1's address on the way to the endpoint:
			// its LAN address, or its pod gateway for ep1.
			if src := r.Src.Addr(); src != node1IP && src != testnet.Node1Addrs.GatewayV4() {
				t.Errorf("%s NodePort: endpoint saw %s, want one of node1's addresses (masqueraded)", proto, r.Src)
			}
			seen[r.Pod] = true
		}
		if len(seen) != 3 {
			t.Errorf("%s NodePort: answered by %v, want all three endpoints", proto, seen)
		}
	}

	// A change applies only itself: ep3 leaves the TCP ClusterIP (its
	// closed connections still count, so it drains) and the UDP one turns
	// sh.
	s.Services[0].Reals = s.Services[0].Reals[:2]
	s.Services[1].Scheduler = "sh"
	res := c.apply(t, k, s)
	want := []string{
		"update service UDP 10.96.0.10:53 sh",
		"drain real TCP 10.96.0.10:80 -> 10.244.2.3:8080 weight 0",
	}
	if got := opStrings(res.Ops); !slices.Equal(got, want) {
		t.Errorf("changes:\n%s\nwant:\n%s\nipvsadm -Ln:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), c.ipvsadm(t))
	}
	for range 4 {
		if r := ask(t, cli.NS, "tcp", netip.AddrPortFrom(clusterIP, 80)); r.Pod == "ep3" {
			t.Errorf("ep3 answered after it left the service")
		}
	}
	if res := c.apply(t, k, s); len(res.Ops) != 0 {
		t.Errorf("the same state again changed: %q", opStrings(res.Ops))
	}
}

// checkRotation checks that names cycle strictly through n servers.
func checkRotation(t *testing.T, what string, names []string, n int) {
	t.Helper()
	first := names[:n]
	if len(slices.Compact(slices.Sorted(slices.Values(first)))) != n {
		t.Errorf("%s: first %d answers %q, want %d different servers", what, n, first, n)
		return
	}
	for i, name := range names {
		if name != first[i%n] {
			t.Errorf("%s: answers %q do not rotate strictly", what, names)
			return
		}
	}
}

// testMatchesFake applies the same random states to the kernel
// and to the Fake: both make the same changes and dump the same state.
func testMatchesFake(t *testing.T, c *ipvsCluster) {
	k := c.kernel(t, Options{})
	fake := NewFake(Options{})
	base := State{Sets: nodePortSets(30080, 30053)}
	c.apply(t, k, base)
	mustApply(t, fake, base)
	rng := rand.New(rand.NewSource(7))
	for i := range 25 {
		s := randomState(rng)
		s.Sets = slices.DeleteFunc(s.Sets, func(set Set) bool { return strings.HasPrefix(set.Name, "KUBE-NODE-PORT-") })
		s.Sets = append(s.Sets, nodePortSets(30080, uint16(30053+i%3))...)
		kres := c.apply(t, k, s)
		fres := mustApply(t, fake, s)
		if got, want := opStrings(kres.Ops), opStrings(fres.Ops); !slices.Equal(got, want) {
			t.Fatalf("step %d: kernel changes:\n%s\nfake changes:\n%s", i, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		dump, err := k.Dump(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if dump != fake.Dump() {
			t.Fatalf("step %d: kernel:\n%s\nfake:\n%s", i, dump, fake.Dump())
		}
		checkIpvsadm(t, c, k)
	}
	checkIpset(t, c, k)
}

// checkIpset holds the kernel's sets as the ipset tool lists them
// against the layer's own reading.
func checkIpset(t *testing.T, c *ipvsCluster, k *Netlink) {
	t.Helper()
	out, err := c.Node1.Exec(context.Background(), "ipset", "save")
	if err != nil {
		t.Fatal(err)
	}
	dump, _ := k.Dump(context.Background())
	for _, line := range strings.Split(dump, "\n") {
		entry, ok := strings.CutPrefix(line, "  ")
		if !ok || strings.HasPrefix(entry, "->") || strings.HasPrefix(entry, "address") {
			continue
		}
		if !strings.Contains(out, " "+entry) {
			t.Errorf("ipset save lacks entry %q:\n%s", entry, out)
		}
	}
}

// testGracefulRemoval: a TCP connection held open to a real server
// survives the server's removal, which only sets its weight to 0 while the
// connection lasts; new connections go to the others; once the grace
// period has passed the next Apply deletes it.
func testGracefulRemoval(t *testing.T, c *ipvsCluster) {
	clock := &clock{t: time.Now()}
	k := c.kernel(t, Options{GracePeriod: time.Minute, Now: clock.now})
	cli := c.Pods["cli"]
	vip := netip.AddrPortFrom(clusterIP, 90)
	s := State{
		Addresses: []netip.Addr{clusterIP},
		Services:  []VirtualServer{{Address: clusterIP, Protocol: TCP, Port: 90, Scheduler: "rr", Reals: c.reals(holdPort)}},
		Sets:      nodePortSets(30080, 30053),
	}
	c.apply(t, k, s)
	held, err := connect(cli.NS, netip.Addr{}, vip)
	if err != nil {
		t.Fatal(err)
	}
	gone := c.Pods[held.Name]
	goneReal := netip.AddrPortFrom(gone.IPv4, holdPort)

	s.Services[0].Reals = slices.DeleteFunc(c.reals(holdPort), func(r RealServer) bool { return r.Address == gone.IPv4 })
	res := c.apply(t, k, s)
	want := []string{"drain real TCP 10.96.0.10:90 -> " + goneReal.String() + " weight 0"}
	if got := opStrings(res.Ops); !slices.Equal(got, want) || res.Draining != 1 {
		t.Fatalf("removing %s with a connection: %q, %d draining; want %q", gone.Name, got, res.Draining, want)
	}
	listing := c.ipvsadm(t)
	t.Logf("ipvsadm -Ln while %s drains:\n%s", gone.Name, listing)
	if !regexp.MustCompile(regexp.QuoteMeta(goneReal.String()) + ` +Masq +0 +1 +0`).MatchString(listing) {
		t.Errorf("ipvsadm -Ln does not show %s with weight 0 and one active connection", gone.Name)
	}
	if name, err := held.ping(); err != nil || name != gone.Name {
		t.Fatalf("held connection after removal: %q, %v; want %s still answering", name, err, gone.Name)
	}
	for _, name := range askMany(t, cli.NS, netip.Addr{}, vip, 4) {
		if name == gone.Name {
			t.Errorf("a new connection went to the removed %s", gone.Name)
		}
	}
	// Closed, the connection lingers in IPVS's table (TIME_WAIT) and
	// keeps the real server draining until the grace period ends.
	if err := held.close(); err != nil {
		t.Fatalf("closing the held connection: %v", err)
	}
	if res := c.apply(t, k, s); len(res.Ops) != 0 || res.Draining != 1 {
		t.Errorf("within the grace period: %q, %d draining; want nothing done", opStrings(res.Ops), res.Draining)
	}
	clock.t = clock.t.Add(time.Minute)
	res = c.apply(t, k, s)
	want = []string{"delete real TCP 10.96.0.10:90 -> " + goneReal.String() + " weight 0"}
	if got := opStrings(res.Ops); !slices.Equal(got, want) || res.Draining != 0 {
		t.Errorf("after the grace period: %q, %d draining; want %q", got, res.Draining, want)
	}
	if strings.Contains(c.ipvsadm(t), goneReal.String()) {
		t.Errorf("ipvsadm -Ln still lists %s", goneReal)
	}
}

// testSchedulers checks each scheduler's behaviour with real
// connections from the client pod to one virtual server over the three
// endpoints' hold servers.
func testSchedulers(t *testing.T, c *ipvsCluster) {
	k := c.kernel(t, Options{})
	cli := c.Pods["cli"]
	srcs := c.addSources(t, 8)
	vip := netip.AddrPortFrom(clusterIP, 100)
	use := func(t *testing.T, scheduler string, weights ...int) {
		t.Helper()
		reals := c.reals(holdPort)
		for i, w := range weights {
			reals[i].Weight = w
		}
		c.apply(t, k, State{
			Addresses: []netip.Addr{clusterIP},
			Services:  []VirtualServer{{Address: clusterIP, Protocol: TCP, Port: 100, Scheduler: scheduler, Reals: reals}},
			Sets:      nodePortSets(30080, 30053),
		})
		t.Cleanup(func() { c.apply(t, k, State{Sets: nodePortSets(30080, 30053)}) })
	}
	t.Run("rr rotates strictly", func(t *testing.T) {
		use(t, "rr")
		checkRotation(t, "rr", askMany(t, cli.NS, netip.Addr{}, vip, 9), 3)
	})
	t.Run("wrr follows the weights", func(t *testing.T) {
		use(t, "wrr", 3, 2, 1)
		counts := map[string]int{}
		for _, name := range askMany(t, cli.NS, netip.Addr{}, vip, 12) {
			counts[name]++
		}
		if want := map[string]int{"ep1": 6, "ep2": 4, "ep3": 2}; !maps.Equal(counts, want) {
			t.Errorf("12 connections over weights 3:2:1 went %v, want %v", counts, want)
		}
	})
	for _, sched := range []string{"sh", "mh"} {
		t.Run(sched+" sends one source to one server", func(t *testing.T) {
			use(t, sched)
			servers := map[string]bool{}
			for _, src := range srcs {
				names := askMany(t, cli.NS, src, vip, 3)
				if len(slices.Compact(names)) != 1 {
					t.Errorf("source %s went to %q, want one server", src, names)
				}
				servers[names[0]] = true
			}
			if len(servers) < 2 {
				t.Errorf("%d sources all went to %v, want them spread", len(srcs), servers)
			}
		})
	}
	for _, sched := range []string{"dh", "lblc", "lblcr"} {
		t.Run(sched+" sends one destination to one server", func(t *testing.T) {
			use(t, sched)
			var names []string
			for _, src := range srcs[:4] {
				names = append(names, askMany(t, cli.NS, src, vip, 2)...)
			}
			if len(slices.Compact(names)) != 1 {
				t.Errorf("connections to %s from four sources went to %q, want one server", vip, names)
			}
		})
	}
	for _, sched := range []string{"lc", "wlc", "sed", "nq"} {
		t.Run(sched+" avoids servers with open connections", func(t *testing.T) {
			use(t, sched)
			first, err := connect(cli.NS, netip.Addr{}, vip)
			if err != nil {
				t.Fatal(err)
			}
			defer first.close()
			second, err := connect(cli.NS, netip.Addr{}, vip)
			if err != nil {
				t.Fatal(err)
			}
			defer second.close()
			if second.Name == first.Name {
				t.Errorf("second connection went to %s, which holds the first", first.Name)
			}
			for _, name := range askMany(t, cli.NS, netip.Addr{}, vip, 3) {
				if name == first.Name || name == second.Name {
					t.Errorf("a new connection went to %s, which holds an open one (open: %s, %s)", name, first.Name, second.Name)
				}
			}
		})
	}
}
