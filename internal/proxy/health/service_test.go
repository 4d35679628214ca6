package health

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// loopback maps health ports to loopback addresses so tests never bind
// outside 127.0.0.0/8: a health port listens on a free port of the same
// host, or on the address fixed for it with bindTo.
type loopback struct {
	mu     sync.Mutex
	fixed  map[string]string // "host:healthport" → address to bind instead
	actual map[string]string // "host:healthport" → bound address
}

func newLoopback() *loopback {
	return &loopback{fixed: map[string]string{}, actual: map[string]string{}}
}

func (l *loopback) listen(network, address string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("test refuses to listen on %q", address)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	target := l.fixed[address]
	if target == "" {
		target = net.JoinHostPort(host, "0")
	}
	ln, err := net.Listen(network, target)
	if err == nil {
		l.actual[address] = ln.Addr().String()
	}
	return ln, err
}

func (l *loopback) bindTo(address, target string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fixed[address] = target
}

func (l *loopback) addr(address string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.actual[address]
}

// fakeProxy is a settable proxy health.
type fakeProxy struct{ unhealthy atomic.Bool }

func (p *fakeProxy) Healthy() bool { return !p.unhealthy.Load() }

// port is a service port whose health check, on node port hc (0: none),
// counts the given local ready endpoint addresses, as the plan resolves
// them (which endpoints count is the plan's test).
func port(ns, name, portName string, f plan.Family, hc uint16, localReady ...string) *plan.ServicePort {
	sp := &plan.ServicePort{
		Key:         plan.Key{ServicePortName: plan.ServicePortName{Namespace: ns, Name: name, Port: portName, Protocol: "TCP"}, Family: f},
		NodePort:    30000,
		HealthCheck: plan.HealthCheck{NodePort: hc},
	}
	for _, a := range localReady {
		sp.HealthCheck.LocalEndpoints = append(sp.HealthCheck.LocalEndpoints, netip.MustParseAddr(a))
	}
	return sp
}

// planOf is a plan whose health ports listen on 127.0.0.1 (::1 in IPv6).
func planOf(ports ...*plan.ServicePort) *plan.Plan {
	return planOn([]string{"127.0.0.1", "::1"}, ports...)
}

// planOn is a plan whose nodePortAddresses are the given node addresses,
// each a /32 or /128; none means every address.
func planOn(addrs []string, ports ...*plan.ServicePort) *plan.Plan {
	p := &plan.Plan{Ports: map[plan.Key]*plan.ServicePort{}}
	for _, a := range addrs {
		ip := netip.MustParseAddr(a)
		p.Config.NodeIPs = append(p.Config.NodeIPs, ip)
		p.Config.NodePortAddresses = append(p.Config.NodePortAddresses, netip.PrefixFrom(ip, ip.BitLen()))
	}
	for _, sp := range ports {
		p.Ports[sp.Key] = sp
	}
	return p
}

// get fetches a path from a running server.
func get(t *testing.T, addr, path string) (*http.Response, string) {
	t.Helper()
	if addr == "" {
		t.Fatalf("no server bound")
	}
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// refused reports whether nothing listens on addr any more.
func refused(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err != nil
}

func TestServiceHealthAnswers(t *testing.T) {
	lb := newLoopback()
	proxy := &fakeProxy{}
	s := NewServiceHealth(ServiceOptions{Proxy: proxy, Listen: lb.listen})
	t.Cleanup(func() { s.Close() })
	tests := []struct {
		name  string
		ready []string // local ready endpoints of port "http"; port "https" gets the first

		unhealthy bool
		code      int
		weight    int
		healthy   bool
	}{
		{name: "no local ready endpoint", code: 503, weight: 0, healthy: true},
		{name: "one local ready endpoint on two ports", ready: []string{"10.0.0.1"}, code: 200, weight: 1, healthy: true},
		{name: "two local ready endpoints", ready: []string{"10.0.0.1", "10.0.0.2"}, code: 200, weight: 2, healthy: true},
		{name: "proxy unhealthy", ready: []string{"10.0.0.1", "10.0.0.2"}, unhealthy: true, code: 503, weight: 2, healthy: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			https := tt.ready[:min(len(tt.ready), 1)]
			proxy.unhealthy.Store(tt.unhealthy)
			if err := s.Sync(planOf(port("acc", "lbl", "http", plan.IPv4, 32100, tt.ready...), port("acc", "lbl", "https", plan.IPv4, 32100, https...))); err != nil {
				t.Fatal(err)
			}
			resp, body := get(t, lb.addr("127.0.0.1:32100"), "/any/path?x=1")
			want := fmt.Sprintf("{\n\t\"service\": {\n\t\t\"namespace\": \"acc\",\n\t\t\"name\": \"lbl\"\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %t\n}", tt.weight, tt.healthy)
			if resp.StatusCode != tt.code || body != want {
				t.Errorf("got %d %q\nwant %d %q", resp.StatusCode, body, tt.code, want)
			}
			wantHeaders := http.Header{
				"Content-Type":                     {"application/json"},
				"X-Content-Type-Options":           {"nosniff"},
				"X-Load-Balancing-Endpoint-Weight": {strconv.Itoa(tt.weight)},
				"Content-Length":                   {strconv.Itoa(len(want))},
			}
			for k, v := range wantHeaders {
				if got := resp.Header.Values(k); len(got) != 1 || got[0] != v[0] {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if len(resp.Header) != len(wantHeaders)+1 || resp.Header.Get("Date") == "" {
				t.Errorf("headers %v, want exactly %v and Date", resp.Header, wantHeaders)
			}
		})
	}
}

// TestServiceHealthPerFamily: as in kube-proxy, a dual-stack Service has
// one server per family on the same port (tcp4 and tcp6 sockets), each
// counting its family's local endpoints.
func TestServiceHealthPerFamily(t *testing.T) {
	lb := newLoopback()
	s := NewServiceHealth(ServiceOptions{Listen: lb.listen})
	t.Cleanup(func() { s.Close() })
	p := planOf(port("acc", "lbl", "", plan.IPv4, 32100, "10.0.0.1", "10.0.0.2"),
		port("acc", "lbl", "", plan.IPv6, 32100, "fd00::1"))
	if err := s.Sync(p); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{"127.0.0.1:32100": "2", "[::1]:32100": "1"} {
		resp, body := get(t, lb.addr(addr), "/")
		if resp.StatusCode != 200 || resp.Header.Get("X-Load-Balancing-Endpoint-Weight") != want || !strings.Contains(body, `"localEndpoints": `+want+`,`) {
			t.Errorf("%s: got %d %v %s, want %s local endpoints", addr, resp.StatusCode, resp.Header, body, want)
		}
	}
}

func TestServiceHealthLifecycle(t *testing.T) {
	lb := newLoopback()
	s := NewServiceHealth(ServiceOptions{Listen: lb.listen})
	planOf := func(ports ...*plan.ServicePort) *plan.Plan {
		return planOn([]string{"127.0.0.1", "127.0.0.2"}, ports...)
	}
	t.Cleanup(func() { s.Close() })
	a := port("ns", "a", "", plan.IPv4, 32001, "10.0.0.1")
	b := port("ns", "b", "", plan.IPv4, 32002, "10.0.0.2")
	cluster := port("ns", "c", "", plan.IPv4, 0, "10.0.0.3")

	if err := s.Sync(planOf(a, b, cluster)); err != nil {
		t.Fatal(err)
	}
	a1, a2, b1 := lb.addr("127.0.0.1:32001"), lb.addr("127.0.0.2:32001"), lb.addr("127.0.0.1:32002")
	for _, addr := range []string{a1, a2, b1} {
		if resp, body := get(t, addr, "/"); resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", addr, resp.StatusCode, body)
		}
	}
	if len(lb.actual) != 4 {
		t.Errorf("bound %v, want a and b on both addresses and nothing for the Cluster-policy Service", lb.actual)
	}

	// Same plan again: nothing is rebound.
	if err := s.Sync(planOf(a, b, cluster)); err != nil || lb.addr("127.0.0.1:32001") != a1 {
		t.Errorf("resync rebound: %v %s → %s", err, a1, lb.addr("127.0.0.1:32001"))
	}

	// b goes away, a moves to another health port.
	moved := port("ns", "a", "", plan.IPv4, 32011, "10.0.0.1")
	if err := s.Sync(planOf(moved)); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{a1, a2, b1} {
		if !refused(addr) {
			t.Errorf("%s still listening after its Service went away or moved", addr)
		}
	}
	if resp, _ := get(t, lb.addr("127.0.0.2:32011"), "/"); resp.StatusCode != 200 {
		t.Errorf("moved health port answers %d", resp.StatusCode)
	}

	// Its endpoints go away: the server stays, answering 503.
	if err := s.Sync(planOf(port("ns", "a", "", plan.IPv4, 32011))); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, lb.addr("127.0.0.2:32011"), "/"); resp.StatusCode != 503 {
		t.Errorf("no endpoints answers %d", resp.StatusCode)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !refused(lb.addr("127.0.0.2:32011")) {
		t.Error("still listening after Close")
	}
}

func TestServiceHealthBindFailure(t *testing.T) {
	lb := newLoopback()
	s := NewServiceHealth(ServiceOptions{Listen: lb.listen})
	t.Cleanup(func() { s.Close() })
	planOf := func(ports ...*plan.ServicePort) *plan.Plan {
		return planOn([]string{"127.0.0.1", "127.0.0.2"}, ports...)
	}

	// Someone else holds the port b's second address would take.
	squatter, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := squatter.Addr().String()
	lb.bindTo("127.0.0.2:32002", taken)

	a := port("ns", "a", "", plan.IPv4, 32001, "10.0.0.1")
	b := port("ns", "b", "", plan.IPv4, 32002, "10.0.0.2")
	err = s.Sync(planOf(a, b))
	if err == nil || !strings.Contains(err.Error(), "Service ns/b (IPv4) on port 32002") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Sync error %v, want one naming ns/b and port 32002", err)
	}
	if strings.Contains(err.Error(), "ns/a") {
		t.Errorf("error names a Service that bound: %v", err)
	}
	if resp, _ := get(t, lb.addr("127.0.0.1:32001"), "/"); resp.StatusCode != 200 {
		t.Errorf("a answers %d while b failed", resp.StatusCode)
	}
	if b1 := lb.addr("127.0.0.1:32002"); !refused(b1) {
		t.Errorf("b's first listener %s left open after its second failed", b1)
	}

	// The port is freed: the next Sync retries and b serves.
	squatter.Close()
	if err := s.Sync(planOf(a, b)); err != nil {
		t.Fatalf("retry: %v", err)
	}
	for _, addr := range []string{lb.addr("127.0.0.1:32002"), taken} {
		if resp, _ := get(t, addr, "/"); resp.StatusCode != 200 {
			t.Errorf("b on %s answers %d after the retry", addr, resp.StatusCode)
		}
	}
}

// TestServiceHealthListensWhereThePlanSays: with every address accepting
// NodePorts, each family's wildcard address, on a socket of that family
// only; when the plan's addresses change (the Node arrived with its
// primary IP), the server moves there.
func TestServiceHealthListensWhereThePlanSays(t *testing.T) {
	var mu sync.Mutex
	var got []string
	s := NewServiceHealth(ServiceOptions{Listen: func(network, address string) (net.Listener, error) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, network+" "+address)
		return net.Listen("tcp", "127.0.0.1:0")
	}})
	t.Cleanup(func() { s.Close() })
	ports := []*plan.ServicePort{port("ns", "a", "", plan.IPv4, 32001), port("ns", "a", "", plan.IPv6, 32001)}
	if err := s.Sync(planOn(nil, ports...)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"tcp4 0.0.0.0:32001", "tcp6 [::]:32001"}; !slices.Equal(got, want) {
		t.Errorf("listened on %q, want %q", got, want)
	}
	got = nil
	if err := s.Sync(planOn([]string{"198.51.100.1"}, ports...)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"tcp4 198.51.100.1:32001"}; !slices.Equal(got, want) {
		t.Errorf("after the addresses changed, listened on %q, want %q (IPv6 unchanged: no IPv6 prefix)", got, want)
	}
	if err := s.Sync(nil); err != nil || len(s.services) != 0 {
		t.Errorf("nil plan: %v, %d servers left", err, len(s.services))
	}
}
