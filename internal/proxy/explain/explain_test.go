package explain

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/ipvs"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
)

func TestParsePacket(t *testing.T) {
	for _, c := range []struct{ src, dst, proto, err string }{
		{"10.244.1.3", "10.96.0.10:53", "udp", ""},
		{"10.244.1.3:40000", "10.96.0.10:53", "", ""},
		{"fd00::1", "[fd00:10:96::1]:80", "tcp", ""},
		{"nonsense", "10.96.0.10:53", "tcp", `--src "nonsense"`},
		{"10.244.1.3", "10.96.0.10", "tcp", `--dst "10.96.0.10"`},
		{"10.244.1.3", "10.96.0.10:53", "icmp", `--proto "icmp"`},
		{"10.244.1.3", "[fd00::1]:53", "tcp", "different IP families"},
	} {
		_, err := ParsePacket(c.src, c.dst, c.proto)
		if (c.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParsePacket(%q, %q, %q) = %v, want %q", c.src, c.dst, c.proto, err, c.err)
		}
	}
}

// TestStatusOfTheFixture: the status lists every port with its policies
// and endpoints, saying which traffic uses which.
func TestStatusOfTheFixture(t *testing.T) {
	p, _ := plan.Build(flows.FixtureFor(plan.Capabilities{Dataplane: "nftables", Schedulers: []string{"rr", "sh"}}))
	s := Status{Mode: "nftables", Ports: PortsOf(p)}
	var b strings.Builder
	s.Write(&b)
	out := b.String()
	for _, want := range []string{
		"flows/three (tcp) 10.96.0.11:80",
		"flows/lb-local (tcp) 10.96.0.13:80, nodePort 30013, 203.0.113.13:80",
		"externalTrafficPolicy Local, healthCheckNodePort",
		"flows/empty (tcp) 10.96.0.22:80",
		"no endpoints: connections are rejected",
		"terminating, serving",
		"sessionAffinity ClientIP",
		"flows/round-robin (tcp) 10.96.0.31:80, nodePort 30031\n  internalTrafficPolicy Cluster, externalTrafficPolicy Cluster\n  scheduler rr (annotation svcproxy.io/scheduler)\n",
		"flows/least-conn (tcp) 10.96.0.33:80\n  internalTrafficPolicy Cluster, externalTrafficPolicy Cluster\n" +
			`  scheduler NOT SUPPORTED: scheduler "lc" (annotation svcproxy.io/scheduler) cannot be expressed by the nftables dataplane (it expresses rr, sh); it spreads new connections uniformly at random` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// TestStatusWithIPVS: on an IPVS node each port lists its virtual
// servers (ClusterIP, load-balancer IP, node port on any address), real
// servers of weight 0 as draining; other ports' and firewall-mark ones
// are not its.
func TestStatusWithIPVS(t *testing.T) {
	p, _ := plan.Build(flows.Fixture())
	s := Status{Mode: "ipvs", Ports: PortsOf(p)}
	real := func(a string, w int) ipvs.RealServer {
		ap := netip.MustParseAddrPort(a)
		return ipvs.RealServer{Address: ap.Addr(), Port: ap.Port(), Weight: w}
	}
	vs := func(proto ipvs.Protocol, a string, reals ...ipvs.RealServer) ipvs.VirtualServer {
		ap := netip.MustParseAddrPort(a)
		return ipvs.VirtualServer{Address: ap.Addr(), Port: ap.Port(), Protocol: proto, Scheduler: "rr", Reals: reals}
	}
	s.addIPVS(ipvs.State{Services: []ipvs.VirtualServer{
		vs(ipvs.TCP, "10.96.0.11:80", real("10.244.1.5:8080", 1), real("10.244.2.5:8080", 0)),
		vs(ipvs.UDP, "10.96.0.11:80"),
		vs(ipvs.TCP, "203.0.113.13:80", real("10.244.1.7:8080", 1)),
		vs(ipvs.TCP, "198.51.100.1:30013", real("10.244.1.7:8080", 1)),
		{Address: netip.IPv4Unspecified(), FWMark: 0x10000, Scheduler: "rr"},
	}})
	var b strings.Builder
	s.Write(&b)
	out := b.String()
	for _, want := range []string{
		"flows/three (tcp) 10.96.0.11:80\n  internalTrafficPolicy Cluster, externalTrafficPolicy Cluster\n" +
			"  ipvs TCP 10.96.0.11:80 rr -> 10.244.1.5:8080 weight 1, 10.244.2.5:8080 weight 0 (draining)\n",
		"  ipvs TCP 203.0.113.13:80 rr -> 10.244.1.7:8080 weight 1\n  ipvs TCP 198.51.100.1:30013 rr -> 10.244.1.7:8080 weight 1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "  ipvs "); n != 3 {
		t.Errorf("%d virtual server lines, want 3:\n%s", n, out)
	}
}

// TestHandler: the agent's endpoints answer status and decisions as JSON,
// and refuse bad packets and an agent that has not synced.
func TestHandler(t *testing.T) {
	p, _ := plan.Build(flows.Fixture())
	var current *plan.Plan
	srv := httptest.NewServer(Handler("nftables", func(fn func(*plan.Plan, SyncStatus)) { fn(current, SyncStatus{Syncs: 3}) }))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	if code, _ := get(DecidePath + "?src=10.244.1.3&dst=10.96.0.11:80"); code != http.StatusServiceUnavailable {
		t.Errorf("before a sync: %d", code)
	}
	current = p
	code, body := get(DecidePath + "?src=10.244.1.3&dst=10.96.0.11:80&proto=tcp")
	var d plan.Decision
	if code != 200 || json.Unmarshal([]byte(body), &d) != nil || d.Action != plan.Forward || len(d.Targets) != 3 {
		t.Errorf("decide: %d %s", code, body)
	}
	if code, body := get(DecidePath + "?src=x&dst=10.96.0.11:80"); code != 400 || !strings.Contains(body, "--src") {
		t.Errorf("bad packet: %d %s", code, body)
	}
	code, body = get(StatusPath)
	var s Status
	if code != 200 || json.Unmarshal([]byte(body), &s) != nil || s.Mode != "nftables" || s.Sync.Syncs != 3 || len(s.Ports) == 0 {
		t.Errorf("status: %d %.300s", code, body)
	}
}

func TestVerdictWords(t *testing.T) {
	hairpin := Verdict{Action: "FORWARD", Endpoints: []string{"10.244.1.3:3000", "10.244.2.3:3000"}, Masqueraded: []string{"10.244.1.3:3000"}}
	if got := hairpin.words("10.244.1.3"); !strings.Contains(got, "the client itself (hairpin)") || !strings.Contains(got, "each 50%") {
		t.Errorf("hairpin: %s", got)
	}
	v6 := Verdict{Action: "FORWARD", Endpoints: []string{"[fd00::2]:80"}, Masqueraded: []string{"[fd00::2]:80"}}
	if got := v6.words("fd00::1"); !strings.HasSuffix(got, "; masqueraded") {
		t.Errorf("all masqueraded: %s", got)
	}
	local := Verdict{Action: "FORWARD", Endpoints: []string{"10.244.2.4:8080"}}
	if got := local.words("198.51.100.100"); !strings.Contains(got, "the endpoint sees the client's address") {
		t.Errorf("not masqueraded: %s", got)
	}
}
