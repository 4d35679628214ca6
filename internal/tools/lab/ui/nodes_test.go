package ui

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// TestDNATFlows keeps the conntrack entries a Service rule DNATed and
// names their endpoints; a node's own connections and replies from the
// address asked are no Service's traffic.
func TestDNATFlows(t *testing.T) {
	entry := func(proto uint8, src, dst string, dport uint16, replySrc string, replySport uint16) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst), SrcPort: 40000, DstPort: dport},
			Reverse: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(replySrc), DstIP: net.ParseIP(src), SrcPort: replySport, DstPort: 40000},
		}
	}
	got := dnatFlows([]*netlink.ConntrackFlow{
		entry(unix.IPPROTO_TCP, "10.244.1.3", "10.96.0.20", 80, "10.244.2.3", 8080),                 // ClusterIP
		entry(unix.IPPROTO_UDP, "10.244.1.3", "10.96.0.10", 53, "10.244.1.2", 53),                   // DNS
		entry(unix.IPPROTO_TCP, "198.51.100.100", "198.51.100.1", 31000, "10.244.3.4", 8080),        // NodePort
		entry(unix.IPPROTO_TCP, "fd00:10:244:1::3", "fd00:10:96::20", 80, "fd00:10:244:2::3", 8080), // IPv6
		entry(unix.IPPROTO_TCP, "10.244.1.1", "10.244.1.3", 8080, "10.244.1.3", 8080),               // a probe: no DNAT
		entry(unix.IPPROTO_ICMP, "10.244.1.3", "10.96.0.20", 0, "10.244.2.3", 0),                    // not a Service protocol
	})
	want := []string{"TCP 10.244.2.3:8080", "UDP 10.244.1.2:53", "TCP 10.244.3.4:8080", "TCP [fd00:10:244:2::3]:8080"}
	if len(got) != len(want) {
		t.Fatalf("flows %+v, want endpoints %v", got, want)
	}
	for i, f := range got {
		if f.Key() != want[i] {
			t.Errorf("flow %d: %s, want %s (%+v)", i, f.Key(), want[i], f)
		}
	}
}

// TestPoolRoutes names the nodes of the client's multipath routes to
// load-balancer addresses, and leaves other routes out.
func TestPoolRoutes(t *testing.T) {
	st, err := lab.NewState("lab", 3, "svcproxy", "nftables")
	if err != nil {
		t.Fatal(err)
	}
	_, lb, _ := net.ParseCIDR("203.0.113.1/32")
	_, lan, _ := net.ParseCIDR("198.51.100.0/24")
	got := poolRoutes(st, []netlink.Route{
		{Dst: lb, MultiPath: []*netlink.NexthopInfo{{Gw: net.ParseIP("198.51.100.1")}, {Gw: net.ParseIP("198.51.100.3")}}},
		{Dst: lan},
		{Dst: nil, Gw: net.ParseIP("198.51.100.1")},
	})
	if len(got) != 1 || got[0].Address != "203.0.113.1" || len(got[0].Nodes) != 2 || got[0].Nodes[0] != "node1" || got[0].Nodes[1] != "node3" {
		t.Errorf("routes: %+v", got)
	}
}
