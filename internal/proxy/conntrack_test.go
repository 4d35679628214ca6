package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/conntrack"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestAPIUDPFlows: the agent deletes the UDP conntrack entries its syncs
// make stale. One UDP socket of pod1b (one source port, so one conntrack
// entry) asks web's ClusterIP: pinned to an endpoint, it moves to the
// other once its endpoint leaves the EndpointSlice (the pod still serves:
// without the cleaning the flow would stay on it). Once the Service is
// deleted, that flow and one from ext to the NodePort stop, instead of
// living on with their old DNAT.
func TestAPIUDPFlows(t *testing.T) { inEveryMode(t, testUDPFlows) }

func testUDPFlows(t *testing.T, mode string) {
	r := newRig(t, mode)
	r.createWeb("pod1a", "pod2a")
	r.start()
	client := r.pod("pod1b").NS
	r.eventually(client, clusterIP, "pod1a", "pod2a")
	flow, err := client.UDPConn(context.Background(), clusterIP)
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	first, err := flow.Ask(2 * time.Second)
	if err != nil {
		t.Fatalf("udp %s → %s: %v", flow.LocalAddr(), clusterIP, err)
	}
	other := map[string]string{"pod1a": "pod2a", "pod2a": "pod1a"}[first.Pod]
	t.Logf("udp %s → %s pinned to %s; removing it from the slice", flow.LocalAddr(), clusterIP, first.Pod)

	r.setEndpoints(r.endpoint(other))
	var seen []string
	waitUntil(t, "the UDP flow answered by "+other, func() bool {
		rep, err := flow.Ask(2 * time.Second)
		if testnet.IsTimeout(err) && !slices.Contains(seen, "lost") {
			// One reply may be lost: one the old endpoint sent after
			// the agent deleted the entry that DNATed its request. It
			// reaches pod1b untranslated, from the endpoint's address,
			// which the socket (connected to the ClusterIP) does not
			// take. The next request makes a new entry, on the new
			// endpoint, which stays: no second loss.
			seen = append(seen, "lost")
			return false
		}
		if err != nil {
			t.Fatalf("udp %s → %s after removing %s: %v (seen %v)\n%s", flow.LocalAddr(), clusterIP, first.Pod, err, seen, r.udpFlowsTo(clusterIP))
		}
		if !rep.SawAddrOf(flow.LocalAddr()) {
			t.Fatalf("%s saw %s, want the flow's own address %s", rep.Pod, rep.Src, flow.LocalAddr().Addr())
		}
		seen = append(seen, rep.Pod)
		return rep.Pod == other
	})
	t.Logf("answers on the way: %v", seen)

	// A second flow, from ext to the NodePort, now on the only endpoint.
	np, err := r.net.Ext.UDPConn(context.Background(), node1Port)
	if err != nil {
		t.Fatal(err)
	}
	defer np.Close()
	if rep, err := np.Ask(2 * time.Second); err != nil || rep.Pod != other {
		t.Fatalf("udp %s → %s: %v %v, want %s", np.LocalAddr(), node1Port, rep, err, other)
	}

	if err := r.client.CoreV1().Services("default").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The agent removes the rules, then deletes the stale entries one by
	// one: wait until both flows' entries are gone (neither flow asks
	// meanwhile, so no reply is in flight), then both must stop at once.
	waitUntil(t, "the flows' DNATed entries deleted after the Service was deleted", func() bool {
		return r.dnatedUDPFlows(clusterIP, node1Port) == 0
	})
	// Without the Service, node1 has nothing on the port: refused.
	if _, err := np.Ask(2 * time.Second); !testnet.IsRefused(err) {
		t.Errorf("udp %s → %s after the Service was deleted: %v, want refused\n%s", np.LocalAddr(), node1Port, err, r.udpFlowsTo(node1Port))
	}
	// And node1 has no route to the ClusterIP (an ICMP network unreachable,
	// which a UDP socket does not report): no answer.
	if rep, err := flow.Ask(2 * time.Second); err == nil {
		t.Errorf("udp %s → %s answered by %s after the Service was deleted\n%s", flow.LocalAddr(), clusterIP, rep.Pod, r.udpFlowsTo(clusterIP))
	}
}

// dnatedUDPFlows counts node1's IPv4 UDP conntrack entries to one of dsts
// that were DNATed: answered by another address than their destination.
func (r *rig) dnatedUDPFlows(dsts ...netip.AddrPort) int {
	r.t.Helper()
	flows, err := r.net.Node1.UDPFlows(unix.AF_INET, func(f *netlink.ConntrackFlow) bool {
		return slices.Contains(dsts, testnet.OrigDst(f)) && testnet.ReplySrc(f) != testnet.OrigDst(f)
	})
	if err != nil {
		r.t.Fatalf("listing node1's conntrack entries: %v", err)
	}
	return len(flows)
}

// udpFlowsTo describes, for a failure, node1's IPv4 UDP conntrack entries
// to dst.
func (r *rig) udpFlowsTo(dst netip.AddrPort) string {
	flows, err := r.net.Node1.UDPFlows(unix.AF_INET, func(f *netlink.ConntrackFlow) bool { return testnet.OrigDst(f) == dst })
	if err != nil {
		return fmt.Sprintf("listing node1's conntrack entries: %v", err)
	}
	return fmt.Sprintf("node1's UDP conntrack entries to %s:\n%s", dst, testnet.FlowList(flows))
}

// TestConntrackCleanerUnavailable: a proxy that cannot open its conntrack
// cleaner says so when it starts and runs on, programming the rules, but
// /healthz answers 503 with the reason (/livez stays 200).
func TestConntrackCleanerUnavailable(t *testing.T) {
	r := newNetRig(t, "nftables")
	r.open = func() (*conntrack.Cleaner, func(), error) {
		return nil, nil, errors.New("netlink: protocol not supported")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(r.manifest(30090, "pod1a")), 0o644); err != nil {
		t.Fatal(err)
	}
	r.start("--manifests=" + dir)
	r.eventually(r.net.Ext, netip.AddrPortFrom(testnet.Node1Addrs.LANv4, 30090), "pod1a")
	body := r.waitCode(healthzAddr, "/healthz", 503)
	const why = "conntrack cleanup is off (stale UDP flows will not be deleted): netlink: protocol not supported"
	if !strings.Contains(body, `"problems":["`+why+`"]`) {
		t.Errorf("/healthz body %s does not give the reason %q", body, why)
	}
	r.waitCode(healthzAddr, "/livez", 200)
	if r.logs.Count("conntrack cleanup is off (stale UDP flows will not be deleted)", "err=netlink: protocol not supported") == 0 {
		t.Errorf("the proxy did not log %q:\n%s", why, strings.Join(r.logs.Lines(), "\n"))
	}
}
