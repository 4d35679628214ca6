package ipvs

import (
	"net/netip"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// TestTraceSkipsDrainingRealServers: a real server of weight 0 (a removed
// endpoint draining its connections) takes no new connection, so the
// tracer never picks it; with only such real servers, the connection is
// refused.
func TestTraceSkipsDrainingRealServers(t *testing.T) {
	vip := netip.MustParseAddr("10.96.0.1")
	live, draining := netip.MustParseAddrPort("10.244.1.5:8080"), netip.MustParseAddrPort("10.244.2.5:8080")
	state := func(reals ...RealServer) State {
		return State{Addresses: []netip.Addr{vip}, Services: []VirtualServer{
			{Address: vip, Protocol: TCP, Port: 80, Scheduler: "rr", Reals: reals}}}
	}
	pkt := plan.Packet{Src: netip.MustParseAddr("10.244.3.7"), Dst: netip.AddrPortFrom(vip, 80), Protocol: "TCP"}
	tables := map[string]*iptables.Table{}

	paths, err := Trace(state(RealServer{live.Addr(), live.Port(), 1}, RealServer{draining.Addr(), draining.Port(), 0}), tables, nil, pkt)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 || paths[0].Endpoint != live {
		t.Errorf("with one live and one draining real server: %+v, want one path to %s", paths, live)
	}
	paths, err = Trace(state(RealServer{draining.Addr(), draining.Port(), 0}), tables, nil, pkt)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 || paths[0].Action != "REJECT" {
		t.Errorf("with only a draining real server: %+v, want the connection refused", paths)
	}
}
