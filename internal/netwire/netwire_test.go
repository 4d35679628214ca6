package netwire

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2) to check against")
	}
}

func ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tempName is a namespace name of this test process, which testnet.Sweep
// would recognise if the test died before removing it.
func tempName(role string) string { return fmt.Sprintf("spt-%d-0-%s", os.Getpid(), role) }

// TestIPCompatible: a namespace Add makes is one `ip netns` lists, enters
// and deletes; one `ip netns add` makes, Delete removes.
func TestIPCompatible(t *testing.T) {
	needRoot(t)
	ours, theirs := tempName("ours"), tempName("theirs")
	if err := Add(ours); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Delete(ours) })
	if err := Add(ours); err == nil {
		t.Errorf("Add of an existing name succeeded")
	}
	if list := ip(t, "netns", "list"); !strings.Contains(list, ours) {
		t.Errorf("ip netns list lacks %s:\n%s", ours, list)
	}
	if out := ip(t, "netns", "exec", ours, "ip", "-o", "link"); strings.Count(out, "\n") != 1 || !strings.Contains(out, "lo:") {
		t.Errorf("a new namespace should hold only lo:\n%s", out)
	}
	ip(t, "netns", "add", theirs)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", theirs).Run() })
	if !Exists(theirs) {
		t.Errorf("Exists(%s) = false after ip netns add", theirs)
	}
	for _, name := range []string{ours, theirs} {
		if err := Delete(name); err != nil {
			t.Errorf("Delete(%s): %v", name, err)
		}
		if Exists(name) {
			t.Errorf("%s exists after Delete", name)
		}
	}
}

// TestWiring: the bridge floods multicast (snooping off), addresses and
// routes land in the namespace opened, multipath routes are replaced and
// flushed by prefix.
func TestWiring(t *testing.T) {
	needRoot(t)
	name := tempName("wire")
	if err := Add(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Delete(name) })
	ns, err := Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	for _, err := range []error{
		ns.Sysctls("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"),
		ns.Up("lo"), ns.AddBridge("br0"), ns.AddVeth("a", ns, "b"), ns.Plug("a", "br0"), ns.Up("b"),
		ns.AddAddrs("b", netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("2001:db8:1::1/64")),
		ns.Sysctls("net.ipv4.fib_multipath_hash_policy=1"),
		ns.ReplaceRoute(Route{Dst: netip.MustParsePrefix("203.0.113.1/32"), Dev: "b",
			Nexthops: []netip.Addr{netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3")}}),
		ns.AddRoute(Route{Dst: netip.MustParsePrefix("203.0.113.2/32"), Via: netip.MustParseAddr("198.51.100.2")}),
		ns.AddRoute(Route{Via: netip.MustParseAddr("198.51.100.9")}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if out := ip(t, "-n", name, "-d", "link", "show", "br0"); !strings.Contains(out, "mcast_snooping 0") {
		t.Errorf("bridge snoops multicast:\n%s", out)
	}
	if out := ip(t, "netns", "exec", name, "sysctl", "-n", "net.ipv4.fib_multipath_hash_policy"); strings.TrimSpace(out) != "1" {
		t.Errorf("sysctl not set inside: %q", out)
	}
	routes := ip(t, "-n", name, "route")
	for _, want := range []string{"default via 198.51.100.9", "203.0.113.1", "nexthop via 198.51.100.3", "203.0.113.2 via 198.51.100.2"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}
	if err := ns.FlushRoutes(netip.MustParsePrefix("203.0.113.0/24")); err != nil {
		t.Fatal(err)
	}
	if routes := ip(t, "-n", name, "route"); strings.Contains(routes, "203.0.113.") || !strings.Contains(routes, "default") {
		t.Errorf("after flushing 203.0.113.0/24:\n%s", routes)
	}
	if tentative, err := ns.Tentative(); err != nil || len(tentative) != 0 {
		t.Errorf("tentative addresses %v, %v (DAD is off)", tentative, err)
	}
}
