package conntrack

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// TestNeedsClean follows a tracker through syncs and checks, per family,
// whether the walk over the conntrack table is needed.
func TestNeedsClean(t *testing.T) {
	tr := plan.NewTracker(testConfig)
	tr.SetNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}})
	web := objects.Service(testNS, "web", objects.ClusterIPs("10.96.0.30"), objects.Port("", v1.ProtocolTCP, 80, 0))
	dns := objects.Service(testNS, "dns", objects.ClusterIPs("10.96.0.10"), objects.Port("", v1.ProtocolUDP, 53, 0))
	udpPorts := []discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolUDP, 5353)}

	step := func(name string, wantV4, wantV6 bool) {
		t.Helper()
		p, ch := tr.Sync()
		if got := NeedsClean(p, ch, plan.IPv4); got != wantV4 {
			t.Errorf("%s: IPv4: NeedsClean = %v, want %v (changes %+v)", name, got, wantV4, ch)
		}
		if got := NeedsClean(p, ch, plan.IPv6); got != wantV6 {
			t.Errorf("%s: IPv6: NeedsClean = %v, want %v (changes %+v)", name, got, wantV6, ch)
		}
	}

	tr.SetService(web)
	step("full sync, TCP only", false, false)
	tr.SetService(dns)
	step("UDP Service added", true, false)
	step("nothing changed", false, false)
	tr.SetSlice(objects.Slice(testNS, "dns", "dns", discovery.AddressTypeIPv4, udpPorts, readyEP("10.244.1.2")))
	step("UDP endpoints changed", true, false)
	tr.SetSlice(objects.Slice(testNS, "web", "web", discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("", v1.ProtocolTCP, 8080)}, readyEP("10.244.1.7")))
	step("TCP endpoints changed", false, false)
	tr.MarkFull()
	step("full sync with a UDP port", true, false)
	tr.SetService(objects.Service(testNS, "dns", objects.ClusterIPs("10.96.0.10", "fd00:10:96::10"), objects.Port("", v1.ProtocolUDP, 53, 0)))
	step("UDP Service becomes dual-stack", false, true)
	tr.DeleteService(testNS, "dns")
	step("UDP Service deleted: its flows must go", true, true)
	tr.MarkFull()
	step("full sync, TCP only again", false, false)
}
