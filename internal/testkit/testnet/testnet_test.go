package testnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/netwire"
)

const askTimeout = 2 * time.Second

func needKernel(t *testing.T) {
	t.Helper()
	RequireKernel(t)
}

func TestLayout(t *testing.T) {
	c, err := layout(Options{}, "x")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{
		"pod1a": {"10.244.1.2", "fd00:10:244:1::2"},
		"pod1b": {"10.244.1.3", "fd00:10:244:1::3"},
		"pod2a": {"10.244.2.2", "fd00:10:244:2::2"},
		"pod2b": {"10.244.2.3", "fd00:10:244:2::3"},
	}
	for name, ips := range want {
		p := c.Pods[name]
		if p == nil || p.IPv4.String() != ips[0] || p.IPv6.String() != ips[1] {
			t.Errorf("pod %s = %+v, want %v", name, p, ips)
		}
	}
	if got := Node2Addrs.Gateways(); got[0].String() != "10.244.2.1" || got[1].String() != "fd00:10:244:2::1" {
		t.Errorf("node2 gateways = %v", got)
	}
	for _, bad := range [][]PodSpec{
		{{Name: "Pod", Node: "node1"}},
		{{Name: "a-very-long-name", Node: "node1"}},
		{{Name: "lan", Node: "node1"}},
		{{Name: "p", Node: "node3"}},
		{{Name: "p", Node: "node1"}, {Name: "p", Node: "node2"}},
	} {
		if _, err := layout(Options{Pods: bad}, "x"); err == nil {
			t.Errorf("layout(%v) succeeded, want error", bad)
		}
	}
}

func TestParseReply(t *testing.T) {
	r, err := parseReply("pod2a [fd00:10:244:1::2]:4000\n")
	if err != nil || r.Pod != "pod2a" || r.Src != netip.MustParseAddrPort("[fd00:10:244:1::2]:4000") {
		t.Errorf("parseReply = %+v, %v", r, err)
	}
	if _, err := parseReply("garbage"); err == nil {
		t.Error("parseReply(garbage) succeeded")
	}
}

func TestCluster(t *testing.T) {
	needKernel(t)
	before := rootState(t)
	var names []string
	t.Run("traffic", func(t *testing.T) {
		c := New(t, Options{})
		for _, ns := range c.Namespaces() {
			names = append(names, ns.Name)
		}
		if missing := without(names, netnsList(t)); len(missing) > 0 {
			t.Fatalf("namespaces not created: %v", missing)
		}
		testTraffic(t, c)
	})
	if left := present(names, netnsList(t)); len(left) > 0 {
		t.Errorf("namespaces left after cleanup: %v", left)
	}
	if after := rootState(t); after != before {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func testTraffic(t *testing.T, c *Cluster) {
	ctx := context.Background()
	pod1a, pod1b, pod2a := c.Pods["pod1a"], c.Pods["pod1b"], c.Pods["pod2a"]
	pod1b.Serve(t, 8080)
	pod2a.Serve(t, 8080)
	c.Node1.Serve(t, "node1",
		netip.AddrPortFrom(Node1Addrs.LANv4, 8081), netip.AddrPortFrom(Node1Addrs.LANv6, 8081))

	t.Run("pod to pod", func(t *testing.T) {
		for _, to := range []*Pod{pod2a, pod1b} { // other node, same node
			for i, dst := range to.IPs() {
				for _, proto := range []string{"tcp", "udp"} {
					r, err := pod1a.NS.Ask(ctx, proto, netip.AddrPortFrom(dst, 8080), askTimeout)
					if err != nil {
						t.Errorf("%s to %s: %v", proto, dst, err)
						continue
					}
					if r.Pod != to.Name || r.Src.Addr() != pod1a.IPs()[i] {
						t.Errorf("%s to %s: reply %+v, want from %s seeing %s", proto, dst, r, to.Name, pod1a.IPs()[i])
					}
				}
			}
		}
	})

	t.Run("ext to node", func(t *testing.T) {
		for i, dst := range Node1Addrs.IPs() {
			r, err := c.Ext.Ask(ctx, "tcp", netip.AddrPortFrom(dst, 8081), askTimeout)
			if err != nil {
				t.Fatalf("to %s: %v", dst, err)
			}
			if want := []netip.Addr{ExtIPv4, ExtIPv6}[i]; r.Pod != "node1" || r.Src.Addr() != want {
				t.Errorf("to %s: reply %+v, want from node1 seeing %s", dst, r, want)
			}
		}
	})

	t.Run("ext has no pod route", func(t *testing.T) {
		_, err := c.Ext.Ask(ctx, "tcp", netip.AddrPortFrom(pod2a.IPv4, 8080), askTimeout)
		if !IsUnreachable(err) {
			t.Errorf("ext to pod: %v, want unreachable", err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			for _, dst := range pod2a.IPs() {
				_, err := pod1a.NS.Ask(ctx, proto, netip.AddrPortFrom(dst, 9), askTimeout)
				if !IsRefused(err) || IsTimeout(err) {
					t.Errorf("%s to closed port on %s: %v, want refused", proto, dst, err)
				}
			}
		}
	})

	t.Run("timeout", func(t *testing.T) {
		nobody := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.50"), 80)
		_, err := c.Ext.Ask(ctx, "tcp", nobody, 300*time.Millisecond)
		if !IsTimeout(err) || IsRefused(err) {
			t.Errorf("tcp to %s: %v, want timeout", nobody, err)
		}
		// Ask's own deadline, not the kernel's connect timeout (minutes).
		if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("tcp to %s: %v, want Ask's deadline to end it", nobody, err)
		}
	})

	t.Run("udp keeps its source port", func(t *testing.T) {
		uc, err := pod1a.NS.UDPConn(ctx, netip.AddrPortFrom(pod2a.IPv6, 8080))
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		for range 3 {
			r, err := uc.Ask(askTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if r.Src != uc.LocalAddr() {
				t.Errorf("server saw %s, client is %s", r.Src, uc.LocalAddr())
			}
		}
	})

	t.Run("do and exec", func(t *testing.T) {
		var inside []net.Addr
		var child []byte
		err := pod1a.NS.Do(func() (err error) {
			if inside, err = net.InterfaceAddrs(); err != nil {
				return err
			}
			child, err = exec.Command("ip", "-br", "addr", "show", "eth0").CombinedOutput()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(child), pod1a.IPv4.String()) {
			t.Errorf("process started in Do: %q, want %s", child, pod1a.IPv4)
		}
		outside, err := net.InterfaceAddrs()
		if err != nil {
			t.Fatal(err)
		}
		if !hasAddr(inside, pod1a.IPv4) || hasAddr(outside, pod1a.IPv4) {
			t.Errorf("Do: inside %v, after %v", inside, outside)
		}
		out, err := pod1a.NS.Exec(ctx, "ip", "-br", "addr", "show", "eth0")
		if err != nil || !strings.Contains(out, pod1a.IPv4.String()) {
			t.Errorf("Exec: %q, %v", out, err)
		}
	})
}

// A failure halfway through the wiring removes the namespaces made so far.
func TestBuildFailureCleansUp(t *testing.T) {
	needKernel(t)
	c, err := layout(Options{Pods: []PodSpec{{Name: "p", Node: "node1"}}}, NamePrefix+"-"+itoa(os.Getpid())+"-fail")
	if err != nil {
		t.Fatal(err)
	}
	bad := func(w *wiring) error {
		if err := w.cluster(); err != nil {
			return err
		}
		return w.open[c.Ext].Up("nosuchlink")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := build(ctx, c, bad); err == nil || !strings.Contains(err.Error(), "nosuchlink") {
		t.Fatalf("build: %v, want failure on nosuchlink", err)
	}
	var names []string
	for _, ns := range c.Namespaces() {
		names = append(names, ns.Name)
	}
	if left := present(names, netnsList(t)); len(left) > 0 {
		t.Errorf("namespaces left after failed build: %v", left)
	}
}

func TestSweep(t *testing.T) {
	needKernel(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	const prefix = "sptsweeptest"
	stale := prefix + "-" + itoa(dead.Process.Pid) + "-1-node1"
	live := prefix + "-" + itoa(os.Getpid()) + "-1-node1"
	for _, name := range []string{stale, live} {
		if err := netwire.Add(name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { deleteNS(name) })
	}
	if err := Sweep(prefix); err != nil {
		t.Fatal(err)
	}
	got := netnsList(t)
	if slices.Contains(got, stale) || !slices.Contains(got, live) {
		t.Errorf("after Sweep: %v, want %s gone and %s kept", got, stale, live)
	}
	deleteNS(stale) // in case Sweep failed to
}

func TestOwnerPID(t *testing.T) {
	for name, want := range map[string]int{
		"spt-123-4-node1": 123, "spt-x-4-node1": 0, "sptx-123-4": 0, "spt-123": 0, "other-123-4": 0,
	} {
		if got, _ := ownerPID(name, "spt"); got != want {
			t.Errorf("ownerPID(%q) = %d, want %d", name, got, want)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func hasAddr(addrs []net.Addr, a netip.Addr) bool {
	for _, x := range addrs {
		if p, err := netip.ParsePrefix(x.String()); err == nil && p.Addr() == a {
			return true
		}
	}
	return false
}

// netnsList returns the names `ip netns list` shows.
func netnsList(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// present returns the names of a also in b.
func present(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// without returns the names of a not in b.
func without(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

var lifetimes = regexp.MustCompile(`(?m)^\s*valid_lft.*\n|expires \d+sec `)

// rootState is the test process's own addresses, routes and rules, with
// the parts that change by themselves (address lifetimes) removed.
func rootState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"addr"}, {"route"}, {"-6", "route"}, {"rule"}, {"-6", "rule"},
	} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		b.WriteString(lifetimes.ReplaceAllString(string(out), ""))
	}
	return b.String()
}

// BenchmarkNew measures building and removing the default cluster: what
// every kernel test pays once (go test -run '^$' -bench New).
func BenchmarkNew(b *testing.B) {
	RequireKernel(b)
	for b.Loop() {
		c, err := Build(context.Background(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
