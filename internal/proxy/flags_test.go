package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// These tests run svcproxy for node1 against a real kube-apiserver (see
// api_test.go) and check, in node1's kernel and sockets, that flags
// kube-proxy has do what they say.

// TestLocalhostNodePorts: in iptables mode with
// --iptables-localhost-nodeports, a connection from the node itself to
// 127.0.0.1:<nodePort> reaches a backend, as kube-proxy's does; without
// the flag (svcproxy's default) and in nftables mode (where kube-proxy
// never does it) it is refused.
func TestLocalhostNodePorts(t *testing.T) {
	testnet.RequireKernel(t, "iptables-restore")
	r := newRig(t, "nftables")
	r.createWeb("pod1a", "pod2a")
	loopback := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), nodePort)
	for _, c := range []struct {
		name    string
		args    []string
		answers bool
	}{
		{"iptables, default", []string{"--proxy-mode=iptables"}, false},
		{"nftables, flag set", []string{"--proxy-mode=nftables", "--iptables-localhost-nodeports"}, false},
		{"iptables, flag set", []string{"--proxy-mode=iptables", "--iptables-localhost-nodeports"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r.t = t
			r.start(c.args...)
			defer r.stop()
			r.synced()
			r.eventually(r.net.Ext, node1Port, "pod1a", "pod2a")
			if c.answers {
				r.eventually(r.net.Node1, loopback, "pod1a", "pod2a")
				if got := r.sysctl("net/ipv4/conf/all/route_localnet"); got != "1" {
					t.Errorf("route_localnet = %s, want 1", got)
				}
				if out, err := r.net.Node1.Exec(context.Background(), "iptables-save", "-t", "filter"); err != nil ||
					!strings.Contains(out, "-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8") || !strings.Contains(out, "-A INPUT -j KUBE-FIREWALL") {
					t.Errorf("filter table without KUBE-FIREWALL: %v\n%s", err, out)
				}
				return
			}
			_, err := r.net.Node1.Ask(context.Background(), "tcp", loopback, 2*time.Second)
			if !testnet.IsRefused(err) {
				t.Errorf("127.0.0.1:%d from the node: %v, want connection refused", nodePort, err)
			}
		})
	}
}

// sysctl reads a sysctl of node1's network namespace.
func (r *rig) sysctl(name string) string {
	r.t.Helper()
	var v []byte
	err := r.net.Node1.Do(func() (err error) {
		v, err = os.ReadFile("/proc/sys/" + name)
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

// TestBindAddressHardFail: with the healthz port taken, --bind-address-hard-fail
// makes svcproxy exit with the error and record kube-proxy's Warning event;
// without it svcproxy programs Services all the same, counts the failure,
// and serves /healthz once the port is free.
func TestBindAddressHardFail(t *testing.T) {
	r := newRig(t, "nftables")
	r.createWeb("pod1a")
	var squatter net.Listener
	if err := r.net.Node1.Do(func() (err error) { squatter, err = net.Listen("tcp", healthzAddr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()

	err := r.run(time.Minute, "--bind-address-hard-fail")
	if err == nil || !strings.Contains(err.Error(), "healthz server: listen on "+healthzAddr.String()) || !strings.Contains(err.Error(), "bindAddressHardFail") {
		t.Fatalf("with the port taken and hard fail: %v, want the healthz server's listen error", err)
	}
	waitUntil(t, "the Warning event FailedToStartProxierHealthcheck", func() bool {
		events, err := r.client.EventsV1().Events("default").List(context.Background(), metav1.ListOptions{})
		return err == nil && hasEvent(events.Items, "FailedToStartProxierHealthcheck", "node1")
	})

	r.start() // bindAddressHardFail false, kube-proxy's default
	r.synced()
	r.eventually(r.net.Ext, node1Port, "pod1a")
	_, _, metrics := r.get(metricsAddr, "/metrics")
	if !strings.Contains(metrics, `svcproxy_server_listen_failures_total{server="healthz"} `) {
		t.Errorf("/metrics lacks svcproxy_server_listen_failures_total{server=\"healthz\"}")
	}
	squatter.Close()
	r.waitCode(healthzAddr, "/healthz", 200) // the next retry, within ListenRetry
}

// run runs the proxy for node1 with the rig's flags and extra until it
// returns, which it must within limit.
func (r *rig) run(limit time.Duration, extra ...string) error {
	r.t.Helper()
	opts := r.parse(append(r.args(), extra...)...)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	err := Run(ctx, opts, r.env())
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		r.t.Fatalf("the proxy ran on for %v", limit)
	}
	return err
}
