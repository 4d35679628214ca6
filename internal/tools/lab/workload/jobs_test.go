package workload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var httpPort0 = []ContainerPort{{Name: "http", Port: 0, Protocol: "TCP"}}

// got is a GET answered in full.
type got struct {
	status int
	header http.Header
	body   string
	close  bool
}

func get(t *testing.T, client *http.Client, target string) got {
	t.Helper()
	g, err := fetch(client, target)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// fetch GETs target with client, or a client with a timeout if nil.
func fetch(client *http.Client, target string) (got, error) {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	resp, err := client.Get(target)
	if err != nil {
		return got{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return got{resp.StatusCode, resp.Header, string(body), resp.Close}, err
}

func urlOf(ap netip.AddrPort, path string) string {
	return "http://" + ap.String() + path
}

// decode reads a JSON answer strictly, checking its framing.
func decode(t *testing.T, g got) answer {
	t.Helper()
	if ct := g.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if !strings.HasSuffix(g.body, "}\n") || strings.Count(g.body, "\n") != 1 {
		t.Errorf("body %q is not one line of JSON", g.body)
	}
	var a answer
	d := json.NewDecoder(strings.NewReader(g.body))
	d.DisallowUnknownFields()
	if err := d.Decode(&a); err != nil {
		t.Fatalf("decode %q: %v", g.body, err)
	}
	return a
}

func startBackend(t *testing.T, pod string, vars map[string]string) *running {
	t.Helper()
	return start(t, JobsAPI, Env{Pod: pod, Namespace: "shop", Bind: backendIP, Ports: httpPort0, Vars: vars})
}

func TestBackendAnswersJobPodAndClient(t *testing.T) {
	be := startBackend(t, "backend-deployment-6c84d55bc6-v7tcq", map[string]string{"VERSION": "v2"})
	g := get(t, nil, urlOf(be.tcp[0], "/"))
	if g.status != http.StatusOK {
		t.Fatalf("status %d, body %q", g.status, g.body)
	}
	a := decode(t, g)
	if !slices.Contains(jobTitles, a.Job) || a.Pod != "backend-deployment-6c84d55bc6-v7tcq" ||
		a.Client != "127.0.0.1" || a.Version != "v2" || a.Backend != nil {
		t.Errorf("answer %+v", a)
	}
	if !strings.Contains(be.log.String(), "GET / from 127.0.0.1 -> backend-deployment-6c84d55bc6-v7tcq") {
		t.Errorf("log %q does not name the client and the pod", be.log)
	}
}

func TestBackendVariesJobsAndOmitsUnsetVersion(t *testing.T) {
	be := startBackend(t, "backend-1", nil)
	seen := map[string]bool{}
	for range 3 {
		g := get(t, nil, urlOf(be.tcp[0], "/"))
		if strings.Contains(g.body, "version") {
			t.Errorf("body %q has a version, VERSION is unset", g.body)
		}
		seen[decode(t, g).Job] = true
	}
	if len(seen) != 3 {
		t.Errorf("3 requests gave jobs %v, want 3 different ones", seen)
	}
}

func TestJobsAPIRoutes(t *testing.T) {
	be := startBackend(t, "backend-1", nil)
	if g := get(t, nil, urlOf(be.tcp[0], "/healthz")); g.status != http.StatusOK || g.body != "ok" {
		t.Errorf("/healthz: %d %q, want 200 ok", g.status, g.body)
	}
	if g := get(t, nil, urlOf(be.tcp[0], "/nothing")); g.status != http.StatusNotFound {
		t.Errorf("/nothing: %d, want 404", g.status)
	}
	resp, err := http.Post(urlOf(be.tcp[0], "/"), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", resp.StatusCode)
	}
}

func TestJobsAPIServesEveryTCPPort(t *testing.T) {
	ports := []ContainerPort{{Name: "http", Port: 0}, {Name: "alt", Port: 0, Protocol: "TCP"}, {Name: "udp", Port: 0, Protocol: "UDP"}}
	be := start(t, JobsAPI, Env{Pod: "backend-1", Bind: backendIP, Ports: ports})
	if len(be.tcp) != 2 || len(be.udp) != 0 {
		t.Fatalf("listening on tcp %v udp %v, want the 2 TCP ports only", be.tcp, be.udp)
	}
	for _, ap := range be.tcp {
		if g := get(t, nil, urlOf(ap, "/healthz")); g.status != http.StatusOK {
			t.Errorf("%v: status %d", ap, g.status)
		}
	}
}

func TestHTTPPorts(t *testing.T) {
	if got := httpPorts(nil); !slices.Equal(got, []int32{DefaultHTTPPort}) {
		t.Errorf("no ports: %v, want %d", got, DefaultHTTPPort)
	}
	udpOnly := []ContainerPort{{Port: 5353, Protocol: "UDP"}}
	if got := httpPorts(udpOnly); !slices.Equal(got, []int32{DefaultHTTPPort}) {
		t.Errorf("UDP port only: %v, want %d", got, DefaultHTTPPort)
	}
}

func TestListenErrorNamesThePort(t *testing.T) {
	taken, err := net.Listen("tcp", netip.AddrPortFrom(backendIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	env := Env{Bind: backendIP, Ports: []ContainerPort{{Name: "http", Port: int32(port)}}}
	err = JobsAPI(t.Context(), env, func() { t.Error("ready called though listening failed") })
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Errorf("got %v, want EADDRINUSE naming port %d", err, port)
	}
}

// cluster starts the DNS and a backend, as the frontend tests need them.
type cluster struct {
	dns      *fakeDNS
	backend  *running
	services *fakeServices
}

func startCluster(t *testing.T) cluster {
	t.Helper()
	be := startBackend(t, "backend-deployment-xyz", map[string]string{"VERSION": "v1"})
	dns, services := startDNS(t, map[string][]netip.Addr{
		"shop/backend-service":  {backendIP},
		"other/backend-service": {backendIP},
		"shop/down-service":     {backendIP}, // nothing listens on its port
	})
	return cluster{dns: dns, backend: be, services: services}
}

func (c cluster) startFrontend(t *testing.T, backendURL string) *running {
	t.Helper()
	return start(t, JobsAPI, Env{
		Pod: "frontend-deployment-abc", Namespace: "shop", Bind: frontendIP, Ports: httpPort0,
		Vars:      map[string]string{"BACKEND_URL": backendURL},
		DNSServer: c.dns.addr.String(), ClusterDomain: "cluster.local",
	})
}

func TestFrontendCallsBackendThroughClusterDNS(t *testing.T) {
	c := startCluster(t)
	port := c.backend.tcp[0].Port()
	for _, tc := range []struct {
		host string
		// asked is the first Service the DNS was asked about.
		asked string
	}{
		{"backend-service", "shop/backend-service"}, // the first search suffix
		{"backend-service.other", "other/backend-service"},
		{"backend-service.shop.svc.cluster.local.", "shop/backend-service"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			before := len(c.services.lookups())
			fe := c.startFrontend(t, fmt.Sprintf("http://%s:%d", tc.host, port))
			g := get(t, nil, urlOf(fe.tcp[0], "/"))
			if g.status != http.StatusOK {
				t.Fatalf("status %d, body %q", g.status, g.body)
			}
			a := decode(t, g)
			var be answer
			if err := json.Unmarshal(a.Backend, &be); err != nil {
				t.Fatalf("backend field %q: %v", a.Backend, err)
			}
			if a.Pod != "frontend-deployment-abc" || a.Client != "127.0.0.1" || a.Job != be.Job || a.Version != "" {
				t.Errorf("frontend answer %+v", a)
			}
			if be.Pod != "backend-deployment-xyz" || be.Version != "v1" || !slices.Contains(jobTitles, be.Job) {
				t.Errorf("backend answer %+v", be)
			}
			if asked := c.services.lookups()[before:]; len(asked) == 0 || asked[0] != tc.asked {
				t.Errorf("DNS was asked about %v, want %s first", asked, tc.asked)
			}
			if !strings.Contains(fe.log.String(), "-> frontend-deployment-abc via backend-deployment-xyz") {
				t.Errorf("log %q does not name both pods", fe.log)
			}
		})
	}
}

func TestFrontendAnswers502NamingTheFailure(t *testing.T) {
	c := startCluster(t)
	for _, tc := range []struct {
		name, url string
		want      []string
	}{
		{
			"missing", fmt.Sprintf("http://missing-service:%d", c.backend.tcp[0].Port()),
			// The name in the pod's namespace, and the DNS that was asked.
			[]string{"missing-service.shop.svc.cluster.local.", c.dns.addr.String(), "no such host"},
		},
		{
			"down", fmt.Sprintf("http://down-service:%d", freePort(t, backendIP)),
			[]string{"down-service", "connection refused"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := c.startFrontend(t, tc.url)
			g := get(t, nil, urlOf(fe.tcp[0], "/"))
			if g.status != http.StatusBadGateway {
				t.Fatalf("status %d, body %q, want 502", g.status, g.body)
			}
			var e map[string]string
			if err := json.Unmarshal([]byte(g.body), &e); err != nil || len(e) != 1 {
				t.Fatalf("body %q, want {\"error\":...}: %v", g.body, err)
			}
			for _, want := range tc.want {
				if !strings.Contains(e["error"], want) {
					t.Errorf("error %q does not say %q", e["error"], want)
				}
			}
		})
	}
}

func TestFrontendRejectsBadBackendURL(t *testing.T) {
	for _, raw := range []string{"ftp://backend-service", "backend-service:3000", "http://"} {
		env := Env{Bind: frontendIP, Ports: httpPort0, Vars: map[string]string{"BACKEND_URL": raw}}
		if err := JobsAPI(t.Context(), env, nil); err == nil {
			t.Errorf("BACKEND_URL %q accepted", raw)
		}
	}
}

func TestResolverSearchList(t *testing.T) {
	r := newResolver(Env{Namespace: "shop", ClusterDomain: "cluster.local"})
	for host, want := range map[string][]string{
		"backend-service": {
			"backend-service.shop.svc.cluster.local.", "backend-service.svc.cluster.local.",
			"backend-service.cluster.local.", "backend-service.",
		},
		"a.b.c.d.e.f": { // 5 dots: as is first
			"a.b.c.d.e.f.", "a.b.c.d.e.f.shop.svc.cluster.local.",
			"a.b.c.d.e.f.svc.cluster.local.", "a.b.c.d.e.f.cluster.local.",
		},
		"backend-service.shop.svc.cluster.local.": {"backend-service.shop.svc.cluster.local."},
	} {
		if got := r.names(host); !slices.Equal(got, want) {
			t.Errorf("names(%q) =\n%q, want\n%q", host, got, want)
		}
	}
}

func TestTerminatingPodClosesConnections(t *testing.T) {
	var terminating atomic.Bool
	be := start(t, JobsAPI, Env{Pod: "backend-1", Bind: backendIP, Ports: httpPort0, Terminating: terminating.Load})
	client := &http.Client{Timeout: 5 * time.Second} // keeps connections alive
	defer client.CloseIdleConnections()

	// net/http reads "Connection: close" into Response.Close and drops the
	// header.
	if g := get(t, client, urlOf(be.tcp[0], "/")); g.close {
		t.Error("serving: Connection: close, want keep-alive")
	}
	terminating.Store(true)
	for _, path := range []string{"/", "/healthz"} {
		if g := get(t, client, urlOf(be.tcp[0], path)); !g.close {
			t.Errorf("terminating %s: no Connection: close", path)
		}
	}
}

// Cancelling the context lets the request in flight finish, then the
// program closes its sockets and returns nil.
func TestCancelFinishesInFlightRequests(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := serveSlowBackend(t, entered, release)
	fe := start(t, JobsAPI, Env{
		Pod: "frontend-1", Bind: frontendIP, Ports: httpPort0,
		Vars: map[string]string{"BACKEND_URL": "http://" + slow.String()}, // an IP: no DNS
	})
	answered := make(chan got, 1)
	go func() {
		g, err := fetch(nil, urlOf(fe.tcp[0], "/"))
		if err != nil {
			g.body = err.Error()
		}
		answered <- g
	}()
	<-entered

	stopped := make(chan error, 1)
	go func() { stopped <- fe.stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("program returned (%v) with a request in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if g := <-answered; g.status != http.StatusOK || !strings.Contains(g.body, `"pod":"slow-backend"`) {
		t.Errorf("in-flight request: %d %q", g.status, g.body)
	}
	if err := <-stopped; err != nil {
		t.Errorf("JobsAPI returned %v, want nil", err)
	}
	if _, err := net.Dial("tcp", fe.tcp[0].String()); err == nil {
		t.Error("listener still open after the program returned")
	}
}

// serveSlowBackend answers GET / once release is closed.
func serveSlowBackend(t *testing.T, entered chan<- struct{}, release <-chan struct{}) netip.AddrPort {
	l, err := net.Listen("tcp", netip.AddrPortFrom(slowIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, `{"job":"Slow Engineer","pod":"slow-backend"}`)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).AddrPort()
}

func TestCancelReturnsPromptlyWithIdleConnection(t *testing.T) {
	be := startBackend(t, "backend-1", nil)
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	get(t, client, urlOf(be.tcp[0], "/")) // leaves a kept-alive connection

	began := time.Now()
	if err := be.stop(); err != nil {
		t.Fatalf("JobsAPI returned %v, want nil", err)
	}
	// Waiting for the idle connection would take all of ShutdownTimeout.
	if took := time.Since(began); took >= ShutdownTimeout {
		t.Errorf("stopping took %v: it waited for the idle connection", took)
	}
}

func TestLogWriterTrimsNewline(t *testing.T) {
	var buf bytes.Buffer
	w := logWriter(func(format string, args ...any) { fmt.Fprintf(&buf, format, args...) })
	w.Write([]byte("http: TLS handshake error\n"))
	if buf.String() != "http: TLS handshake error" {
		t.Errorf("logged %q", buf.String())
	}
}
