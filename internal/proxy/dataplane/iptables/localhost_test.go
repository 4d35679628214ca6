package iptables

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
)

// TestLocalhostNodePorts: with the plan's localhost NodePorts, a full
// sync writes kube-proxy's rules: the NodePort jump without "! -d
// 127.0.0.0/8", and KUBE-FIREWALL, jumped to first from filter INPUT and
// OUTPUT, dropping packets for 127.0.0.0/8 from elsewhere. The node's own
// connection to 127.0.0.1:<nodePort> is forwarded as the plan says; a
// neighbour's packet to 127.0.0.1 is dropped. Turned off again, NodePorts
// leave loopback, while KUBE-FIREWALL stays, through Cleanup too: like
// kube-proxy, svcproxy never removes it.
func TestLocalhostNodePorts(t *testing.T) {
	in := flows.FixtureFor(Capabilities)
	in.Config.LocalhostNodePorts = true
	p, errs := plan.Build(in)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	fake := NewFake()
	dp := New(Options{Kernel: fake})
	if err := dp.Sync(context.Background(), p, plan.Changes{Full: true}); err != nil {
		t.Fatal(err)
	}
	save := fake.Dump(plan.IPv4)
	for _, want := range []string{
		"-A KUBE-FIREWALL " + localnetFirewall,
		"-A INPUT -j KUBE-FIREWALL",
		"-A OUTPUT -j KUBE-FIREWALL",
		`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
	} {
		if !strings.Contains(save, want+"\n") {
			t.Errorf("iptables-save lacks %q:\n%s", want, save)
		}
	}
	if strings.Contains(fake.Dump(plan.IPv6), "KUBE-FIREWALL") {
		t.Errorf("KUBE-FIREWALL in IPv6, where NodePorts never answer on loopback")
	}
	tables := ParseSave(save)
	loopback := plan.Packet{Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddrPort("127.0.0.1:30012"), Protocol: v1.ProtocolTCP, FromHost: true}
	want := p.Decide(loopback)
	if want.Action != plan.Forward {
		t.Fatalf("the plan does not forward %v: %+v", loopback, want)
	}
	paths, err := Trace(tables, p.Config.NodeIPs, loopback)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Decision(paths); err != nil || got.Action != plan.Forward || len(got.Targets) != len(want.Targets) {
		t.Errorf("127.0.0.1:30012 from the node: %+v %v, want %+v\n%s", got, err, want, showPaths(paths))
	}
	martian := plan.Packet{Src: netip.MustParseAddr("198.51.100.100"), Dst: netip.MustParseAddrPort("127.0.0.1:22"), Protocol: v1.ProtocolTCP}
	if paths, err := Trace(tables, p.Config.NodeIPs, martian); err != nil || len(paths) != 1 || paths[0].Action != plan.Drop {
		t.Errorf("a neighbour's packet to 127.0.0.1:22: %v %v, want DROP", err, showPaths(paths))
	}

	in.Config.LocalhostNodePorts = false
	p, _ = plan.Build(in)
	if err := dp.Sync(context.Background(), p, plan.Changes{Full: true}); err != nil {
		t.Fatal(err)
	}
	save = fake.Dump(plan.IPv4)
	if !strings.Contains(save, "! -d 127.0.0.0/8") || !strings.Contains(save, "-A KUBE-FIREWALL ") {
		t.Errorf("localhost NodePorts off: want the NodePort jump to skip loopback and KUBE-FIREWALL kept:\n%s", save)
	}
	if err := dp.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if save = fake.Dump(plan.IPv4); !strings.Contains(save, "-A KUBE-FIREWALL ") || strings.Contains(save, "KUBE-SERVICES") {
		t.Errorf("after Cleanup, want only KUBE-FIREWALL left:\n%s", save)
	}
}

// TestRefusesWhatItCannotWrite: two pod-network prefixes of one family
// do not fit the ClusterIP masquerade rule; the sync fails naming the
// setting and writes nothing.
func TestRefusesWhatItCannotWrite(t *testing.T) {
	in := flows.FixtureFor(Capabilities)
	in.Config.ClusterCIDRs = append(in.Config.ClusterCIDRs, netip.MustParsePrefix("10.245.0.0/16"))
	p, errs := plan.Build(in)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	fake := NewFake()
	err := New(Options{Kernel: fake}).Sync(context.Background(), p, plan.Changes{Full: true})
	if err == nil || !strings.Contains(err.Error(), "clusterCIDR") {
		t.Fatalf("sync with two IPv4 pod prefixes: %v, want a clusterCIDR error", err)
	}
	if fake.Last(plan.IPv4) != nil || fake.Dump(plan.IPv4) != "" {
		t.Errorf("a refused sync wrote:\n%s", fake.Dump(plan.IPv4))
	}
}
