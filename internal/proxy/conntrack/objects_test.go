package conntrack

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// Builders for the tests. The address plan is the one of the plan package's
// tests: this node is "node1" with 198.51.100.1 / 2001:db8:1::1, pods are in
// 10.244.0.0/16 and fd00:10:244::/56, ClusterIPs in 10.96.0.0/16 and
// fd00:10:96::/112, external addresses in 203.0.113.0/24 and 2001:db8:2::/64,
// and other hosts in 192.0.2.0/24.

const testNS = "ns"

var testConfig = plan.Config{
	NodeName:     "node1",
	ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")},
	NodeIPs:      []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:1::1")},
}

// readyEP is a ready endpoint.
func readyEP(ip string) discovery.Endpoint {
	return objects.Endpoint(ip, objects.Conditions(true, true, false))
}

// build plans the objects with cfg and fails on any validation error.
func build(t *testing.T, cfg plan.Config, services []*v1.Service, slices ...*discovery.EndpointSlice) *plan.Plan {
	t.Helper()
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: cfg.NodeName}}
	p, errs := plan.Build(plan.Input{Services: services, Slices: slices, Node: node, Config: cfg})
	for _, err := range errs {
		t.Fatalf("building the plan: %v", err)
	}
	return p
}

// flow is a conntrack flow as the kernel reports it: the original tuple
// origSrc → origDst, and the reply tuple replySrc → origSrc (no SNAT).
// Without DNAT, replySrc is origDst.
func flow(proto uint8, origSrc, origDst, replySrc string) *netlink.ConntrackFlow {
	s, d, r := netip.MustParseAddrPort(origSrc), netip.MustParseAddrPort(origDst), netip.MustParseAddrPort(replySrc)
	fam := uint8(unix.AF_INET)
	if s.Addr().Is6() {
		fam = unix.AF_INET6
	}
	return &netlink.ConntrackFlow{
		FamilyType: fam,
		Forward:    netlink.IPTuple{Protocol: proto, SrcIP: ipOf(s), SrcPort: s.Port(), DstIP: ipOf(d), DstPort: d.Port()},
		Reverse:    netlink.IPTuple{Protocol: proto, SrcIP: ipOf(r), SrcPort: r.Port(), DstIP: ipOf(s), DstPort: s.Port()},
	}
}

// ipOf returns the address in the form netlink parses it: 4 bytes for IPv4.
func ipOf(ap netip.AddrPort) net.IP { return net.IP(ap.Addr().AsSlice()) }

func udp(origSrc, origDst, replySrc string) *netlink.ConntrackFlow {
	return flow(unix.IPPROTO_UDP, origSrc, origDst, replySrc)
}

func tcp(origSrc, origDst, replySrc string) *netlink.ConntrackFlow {
	return flow(unix.IPPROTO_TCP, origSrc, origDst, replySrc)
}
