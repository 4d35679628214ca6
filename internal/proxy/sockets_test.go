package proxy

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestListeningSockets: with a dual-stack LoadBalancer Service of
// externalTrafficPolicy Local, node1's listening TCP sockets are the ones
// kube-proxy v1.36 opens (read in its cmd/kube-proxy and
// pkg/proxy/healthcheck): /healthz on 0.0.0.0:10256, which Go makes one
// dual-stack socket ("*"), /metrics on 127.0.0.1:10249, and the
// health-check node port once per IP family (tcp4 and tcp6 sockets, so
// "[::]" is IPv6 only): on the family's wildcard address when
// nodePortAddresses leaves the family unrestricted, else on each node
// address it selects; "primary" selects the Node's primary IPs.
func TestListeningSockets(t *testing.T) {
	r := newRig(t, "nftables")
	const hc = 32123
	svc := objects.Service("default", "local", objects.ClusterIPs("10.96.0.20", "fd00:10:96::20"), objects.IPFamilies(v1.IPFamilyPolicyRequireDualStack),
		objects.Type(v1.ServiceTypeLoadBalancer), objects.Port("http", v1.ProtocolTCP, 80, 31080), objects.ExternalTrafficPolicyLocal(hc))
	r.create(svc)
	ports := []discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, podPort)}
	p := r.pod("pod1a")
	r.create(objects.Slice("default", "local-v4", "local", discovery.AddressTypeIPv4, ports, r.endpoint("pod1a")))
	r.create(objects.Slice("default", "local-v6", "local", discovery.AddressTypeIPv6, ports, objects.Endpoint(p.IPv6.String(), objects.OnNode(p.Node))))

	lan4, lan6 := testnet.Node1Addrs.LANv4.String(), "["+testnet.Node1Addrs.LANv6.String()+"]"
	hcPort := ":" + strconv.Itoa(hc)
	servers := []string{"*:10256", "127.0.0.1:10249"}
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"nodePortAddresses unset (iptables mode)", []string{"--proxy-mode=iptables"},
			[]string{"0.0.0.0" + hcPort, "[::]" + hcPort}},
		{"primary (nftables mode's default)", []string{"--proxy-mode=nftables"},
			[]string{lan4 + hcPort, lan6 + hcPort}},
		{"an IPv4 CIDR: IPv6 unrestricted", []string{"--proxy-mode=iptables", "--nodeport-addresses=" + testnet.LANv4.String()},
			[]string{lan4 + hcPort, "[::]" + hcPort}},
		{"both families' CIDRs", []string{"--proxy-mode=nftables", "--nodeport-addresses=" + testnet.LANv4.String() + "," + testnet.LANv6.String()},
			[]string{lan4 + hcPort, lan6 + hcPort}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r.t = t
			r.start(append(c.args, "--healthz-bind-address=0.0.0.0:10256", "--metrics-bind-address=127.0.0.1:10249")...)
			defer r.stop()
			r.synced()
			want := slices.Sorted(slices.Values(append(c.want, servers...)))
			var got []string
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if got = r.listening(); slices.Equal(got, want) {
					return
				}
			}
			t.Errorf("node1 listens on %q, want %q (kube-proxy's)", got, want)
		})
	}
}

// listening lists node1's listening TCP sockets, "address:port" as ss
// prints them, sorted.
func (r *rig) listening() []string {
	r.t.Helper()
	out, err := r.net.Node1.Exec(context.Background(), "ss", "-ltnH")
	if err != nil {
		r.t.Fatal(err)
	}
	var addrs []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			addrs = append(addrs, strings.TrimSuffix(f[3], "%lo"))
		}
	}
	slices.Sort(addrs)
	return addrs
}
