package conntrack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// kernelFamily is the address plan of the kernel test in one family: two
// endpoints and a client, all on a dummy interface of a private network
// namespace, a ClusterIP and this node's address.
type kernelFamily struct {
	family      plan.Family
	nft         string // nftables family and address match: "ip" or "ip6"
	addressType discovery.AddressType
	hostBits    string // prefix length of a host address
	addrFlags   []string
	ep2, ep3    netip.Addr
	client      netip.Addr
	clusterIP   netip.Addr
	node        netip.Addr
	elsewhere   netip.Addr // another host
}

var kernelFamilies = []kernelFamily{
	{
		family: plan.IPv4, nft: "ip", addressType: discovery.AddressTypeIPv4, hostBits: "/32",
		ep2: netip.MustParseAddr("10.244.1.2"), ep3: netip.MustParseAddr("10.244.1.3"),
		client:    netip.MustParseAddr("10.244.1.100"),
		clusterIP: netip.MustParseAddr("10.96.0.10"), node: netip.MustParseAddr("198.51.100.1"),
		elsewhere: netip.MustParseAddr("192.0.2.7"),
	},
	{
		family: plan.IPv6, nft: "ip6", addressType: discovery.AddressTypeIPv6, hostBits: "/128",
		addrFlags: []string{"nodad"}, // usable at once, without duplicate address detection
		ep2:       netip.MustParseAddr("fd00:10:244:1::2"), ep3: netip.MustParseAddr("fd00:10:244:1::3"),
		client:    netip.MustParseAddr("fd00:10:244:1::100"),
		clusterIP: netip.MustParseAddr("fd00:10:96::10"), node: netip.MustParseAddr("2001:db8:1::1"),
		elsewhere: netip.MustParseAddr("2001:db8::7"),
	},
}

// The ports of the kernel test, and the client ports of each flow.
const (
	servicePort  = 53
	nodePortNum  = 30053
	endpointPort = 5353

	portCluster   = 40000 // client → ClusterIP, DNATed
	portDirect    = 40001 // client → endpoint directly: no Service address
	portNoDNAT    = 40002 // client → ClusterIP before any DNAT rule
	portNodePort  = 40003 // client → node address:NodePort, DNATed
	portElsewhere = 40004 // client → another host:NodePort number, no Service address
)

// TestCleanUDPKernel runs CleanUDP against a real conntrack table in a
// private network namespace, and shows that it fixes flows stuck on an old
// endpoint and flows stuck without DNAT.
func TestCleanUDPKernel(t *testing.T) {
	testnet.RequireKernel(t, "nft")
	for _, kf := range kernelFamilies {
		t.Run(kf.family.String(), func(t *testing.T) { testCleanUDPKernel(t, kf) })
	}
}

func testCleanUDPKernel(t *testing.T, kf kernelFamily) {
	nsName, ns := newNetns(t)
	// A dummy interface where the kernel has one, else a veth pair with
	// both ends here (forwarding is off, so what leaves d0 is lost too).
	if out, err := command(nil, "ip", "-n", nsName, "link", "add", "d0", "type", "dummy"); err != nil {
		t.Logf("no dummy interface (%v: %s), using veth", err, bytes.TrimSpace(out))
		run(t, nil, "ip", "-n", nsName, "link", "add", "d0", "type", "veth", "peer", "name", "d0peer")
		run(t, nil, "ip", "-n", nsName, "link", "set", "d0peer", "up")
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", kf.ep2.String() + kf.hostBits, "dev", "d0"},
		{"addr", "add", kf.ep3.String() + kf.hostBits, "dev", "d0"},
		{"addr", "add", kf.client.String() + kf.hostBits, "dev", "d0"},
		{"addr", "add", kf.node.String() + kf.hostBits, "dev", "d0"},
		{"link", "set", "d0", "up"},
		// ClusterIPs are routed nowhere in particular: without DNAT the
		// packet leaves through d0 and is lost.
		{"-" + map[plan.Family]string{plan.IPv4: "4", plan.IPv6: "6"}[kf.family], "route", "add", "default", "dev", "d0"},
	} {
		if args[0] == "addr" {
			args = append(args, kf.addrFlags...)
		}
		run(t, nil, "ip", append([]string{"-n", nsName}, args...)...)
	}
	// A nat chain alone does not enable conntrack in a namespace, a rule
	// using it does: "track" keeps it on while the nat chain is rewritten.
	nft(t, nsName, fmt.Sprintf(`table %s spct {
	chain track { type filter hook output priority 0; policy accept; ct state new counter; }
	chain output { type nat hook output priority -100; policy accept; }
}`, kf.nft))

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", nsName, err)
	}
	t.Cleanup(h.Close)
	if err := h.SetSocketTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Servers answer with their own address, so the client knows which
	// endpoint it reached although replies come from the Service address.
	var conns []*net.UDPConn
	inNetns(t, ns, func() error {
		for _, a := range []netip.AddrPort{
			netip.AddrPortFrom(kf.ep2, endpointPort), netip.AddrPortFrom(kf.ep3, endpointPort),
			netip.AddrPortFrom(kf.client, portCluster), netip.AddrPortFrom(kf.client, portDirect),
			netip.AddrPortFrom(kf.client, portNoDNAT), netip.AddrPortFrom(kf.client, portNodePort),
			netip.AddrPortFrom(kf.client, portElsewhere),
		} {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			conns = append(conns, c)
		}
		return nil
	})
	serve(conns[0])
	serve(conns[1])
	cCluster, cDirect, cNoDNAT, cNodePort, cElsewhere := conns[2], conns[3], conns[4], conns[5], conns[6]
	clusterAddr := netip.AddrPortFrom(kf.clusterIP, servicePort)
	nodePortAddr := netip.AddrPortFrom(kf.node, nodePortNum)
	elsewhereAddr := netip.AddrPortFrom(kf.elsewhere, nodePortNum)
	ep2, ep3 := netip.AddrPortFrom(kf.ep2, endpointPort), netip.AddrPortFrom(kf.ep3, endpointPort)

	// Before any rule: the packet to the ClusterIP leaves undNATed and its
	// entry records no DNAT.
	expectSilence(t, cNoDNAT, clusterAddr)

	setDNAT := func(to netip.Addr) {
		t.Helper()
		target := netip.AddrPortFrom(to, endpointPort).String()
		nft(t, nsName, strings.Join([]string{
			fmt.Sprintf("flush chain %s spct output", kf.nft),
			fmt.Sprintf("add rule %s spct output %s daddr %s udp dport %d dnat to %s", kf.nft, kf.nft, kf.clusterIP, servicePort, target),
			fmt.Sprintf("add rule %s spct output %s daddr %s udp dport %d dnat to %s", kf.nft, kf.nft, kf.node, nodePortNum, target),
		}, "\n"))
	}
	setDNAT(kf.ep2)
	expectAnswer(t, cCluster, clusterAddr, ep2)
	expectAnswer(t, cNodePort, nodePortAddr, ep2)
	expectAnswer(t, cDirect, ep3, ep3)
	expectSilence(t, cNoDNAT, clusterAddr) // its entry still says: no DNAT
	expectSilence(t, cElsewhere, elsewhereAddr)
	checkEntries(t, h, kf, map[uint16]netip.AddrPort{
		portCluster: ep2, portNodePort: ep2, portDirect: ep3, portNoDNAT: clusterAddr, portElsewhere: elsewhereAddr,
	})

	// The Service moves to .3. Without cleanup, the existing flows stick.
	setDNAT(kf.ep3)
	expectAnswer(t, cCluster, clusterAddr, ep2)
	expectAnswer(t, cNodePort, nodePortAddr, ep2)
	expectSilence(t, cNoDNAT, clusterAddr)

	// The plan agrees: .2 is terminating and no longer serving, .3 serves.
	// NodeIPs are left out, so that the NodePort's addresses must come from
	// the namespace's own: the host elsewhere is not one, and keeps its entry.
	cfg := testConfig
	cfg.NodeIPs = nil
	svc := objects.Service(testNS, "dns", objects.Type(v1.ServiceTypeNodePort), objects.ClusterIPs(kf.clusterIP.String()),
		objects.Port("", v1.ProtocolUDP, servicePort, nodePortNum))
	p := build(t, cfg, []*v1.Service{svc},
		objects.Slice(testNS, "dns", "dns", kf.addressType, []discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolUDP, endpointPort)},
			objects.Endpoint(kf.ep2.String(), objects.Conditions(false, false, true)), readyEP(kf.ep3.String())))
	c := New(h)
	deleted, err := c.CleanUDP(p, kf.family)
	if err != nil {
		t.Fatalf("CleanUDP: %v", err)
	}
	if deleted != 3 {
		t.Errorf("CleanUDP deleted %d entries, want 3 (ClusterIP → .2, NodePort → .2, ClusterIP without DNAT)", deleted)
	}
	checkEntries(t, h, kf, map[uint16]netip.AddrPort{portDirect: ep3, portElsewhere: elsewhereAddr})

	// The same sockets now reach the serving endpoint.
	expectAnswer(t, cCluster, clusterAddr, ep3)
	expectAnswer(t, cNodePort, nodePortAddr, ep3)
	expectAnswer(t, cNoDNAT, clusterAddr, ep3)
	expectAnswer(t, cDirect, ep3, ep3)
	checkEntries(t, h, kf, map[uint16]netip.AddrPort{
		portCluster: ep3, portNodePort: ep3, portDirect: ep3, portNoDNAT: ep3, portElsewhere: elsewhereAddr,
	})

	// Nothing is stale any more.
	if deleted, err := c.CleanUDP(p, kf.family); err != nil || deleted != 0 {
		t.Errorf("second CleanUDP = %d, %v; want 0, nil", deleted, err)
	}
	// The other family's table is not touched.
	other := plan.IPv6
	if kf.family == plan.IPv6 {
		other = plan.IPv4
	}
	if deleted, err := c.CleanUDP(p, other); err != nil || deleted != 0 {
		t.Errorf("CleanUDP(%s) = %d, %v; want 0, nil", other, deleted, err)
	}
	checkEntries(t, h, kf, map[uint16]netip.AddrPort{
		portCluster: ep3, portNodePort: ep3, portDirect: ep3, portNoDNAT: ep3, portElsewhere: elsewhereAddr,
	})
}

var netnsSeq atomic.Int32

// newNetns creates a named network namespace, removed when the test ends,
// and returns its name and a handle on it.
func newNetns(t *testing.T) (string, netns.NsHandle) {
	t.Helper()
	name := fmt.Sprintf("spct-%d-%d", os.Getpid(), netnsSeq.Add(1))
	run(t, nil, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := command(nil, "ip", "netns", "delete", name); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("opening netns %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	return name, ns
}

// inNetns runs fn on an OS thread switched into ns. The thread is never
// switched back: it is locked and thrown away when fn returns, so no other
// goroutine ever runs in the namespace by accident. Sockets fn creates stay
// in ns.
func inNetns(t *testing.T, ns netns.NsHandle, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("entering netns: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// command runs a command, killed after 10s, and returns its output.
func command(stdin []byte, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.WaitDelay = time.Second
	return cmd.CombinedOutput()
}

// run runs a command and fails the test on error.
func run(t *testing.T, stdin []byte, name string, args ...string) {
	t.Helper()
	if out, err := command(stdin, name, args...); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// nft applies an nftables script in the namespace.
func nft(t *testing.T, nsName, script string) {
	t.Helper()
	run(t, []byte(script+"\n"), "ip", "netns", "exec", nsName, "nft", "-f", "-")
}

// serve answers every datagram with the server's own address, until the
// socket is closed.
func serve(c *net.UDPConn) {
	self := []byte(c.LocalAddr().(*net.UDPAddr).AddrPort().String())
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(self, from)
		}
	}()
}

// ask sends one datagram from c to dst and waits up to timeout for the
// answer, which must come from dst. It returns the server that answered.
func ask(c *net.UDPConn, dst netip.AddrPort, timeout time.Duration) (string, error) {
	if _, err := c.WriteToUDPAddrPort([]byte("who"), dst); err != nil {
		return "", err
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", err
	}
	if from := netip.AddrPortFrom(from.Addr().Unmap(), from.Port()); from != dst {
		return "", fmt.Errorf("answer from %s, want %s", from, dst)
	}
	return string(buf[:n]), nil
}

func expectAnswer(t *testing.T, c *net.UDPConn, dst, server netip.AddrPort) {
	t.Helper()
	got, err := ask(c, dst, 2*time.Second)
	if err != nil {
		t.Fatalf("%s → %s: %v", c.LocalAddr(), dst, err)
	}
	if got != server.String() {
		t.Fatalf("%s → %s answered by %s, want %s", c.LocalAddr(), dst, got, server)
	}
}

func expectSilence(t *testing.T, c *net.UDPConn, dst netip.AddrPort) {
	t.Helper()
	got, err := ask(c, dst, 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s → %s: got %q, %v; want no answer", c.LocalAddr(), dst, got, err)
	}
}

// checkEntries compares the UDP conntrack entries of the client, by client
// port, with the reply source each should have.
func checkEntries(t *testing.T, h *netlink.Handle, kf kernelFamily, want map[uint16]netip.AddrPort) {
	t.Helper()
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, inetFamily(kf.family))
	if err != nil {
		t.Fatalf("listing conntrack entries: %v", err)
	}
	got := map[uint16]netip.AddrPort{}
	for _, f := range flows {
		src, _ := addrPort(f.Forward.SrcIP, f.Forward.SrcPort)
		if f.Forward.Protocol != unix.IPPROTO_UDP || src.Addr() != kf.client {
			continue
		}
		reply, _ := addrPort(f.Reverse.SrcIP, f.Reverse.SrcPort)
		if _, dup := got[src.Port()]; dup {
			t.Errorf("two entries from %s: %v", src, f)
		}
		got[src.Port()] = reply
	}
	for port, w := range want {
		if g, ok := got[port]; !ok {
			t.Errorf("no conntrack entry from client port %d, want one answered by %s", port, w)
		} else if g != w {
			t.Errorf("entry from client port %d answered by %s, want %s", port, g, w)
		}
	}
	for port, g := range got {
		if _, ok := want[port]; !ok {
			t.Errorf("unexpected conntrack entry from client port %d answered by %s", port, g)
		}
	}
}
