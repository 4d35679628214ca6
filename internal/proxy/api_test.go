package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/proxy/agent"
	"github.com/svcproxy/svcproxy/internal/proxy/config"
	"github.com/svcproxy/svcproxy/internal/proxy/conntrack"
	"github.com/svcproxy/svcproxy/internal/proxy/metrics"
	"github.com/svcproxy/svcproxy/internal/proxy/source"
	"github.com/svcproxy/svcproxy/internal/testkit/apiserver"
	"github.com/svcproxy/svcproxy/internal/testkit/logtest"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane"
)

// The API tests run the proxy in-process against a real kube-apiserver and
// etcd, programming node1 of a testnet cluster; traffic goes from the
// external client and from pods through the kernel's rules.

const (
	webIP    = "10.96.0.10"
	nodePort = 30080
	podPort  = 8080
)

var (
	clusterIP   = netip.AddrPortFrom(netip.MustParseAddr(webIP), 80)
	node1Port   = netip.AddrPortFrom(testnet.Node1Addrs.LANv4, nodePort)
	healthzAddr = netip.AddrPortFrom(testnet.Node1Addrs.LANv4, config.HealthzPort)
	metricsAddr = netip.AddrPortFrom(testnet.Node1Addrs.LANv4, config.MetricsPort)
)

// modes are the proxy modes every API test runs in.
var modes = []string{"nftables", "iptables"}

// inEveryMode runs test as a subtest per proxy mode.
func inEveryMode(t *testing.T, test func(t *testing.T, mode string)) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { test(t, mode) })
	}
}

// rig is one cluster, one control plane and a running proxy on node1.
type rig struct {
	t      *testing.T
	mode   string // --proxy-mode
	cp     *controlplane.ControlPlane
	client kubernetes.Interface
	net    *testnet.Cluster
	stop   func() // checks the proxy's failure counters, stops it and waits for it
	agent  atomic.Pointer[agent.Agent]
	// open, when set, replaces how the proxy opens its conntrack cleaner.
	open func() (*conntrack.Cleaner, func(), error)
	// metrics is the running proxy's metrics server address.
	metrics string

	logs *logtest.Recorder // the proxy's log lines, up to -v=4
}

func newRig(t *testing.T, mode string) *rig {
	r := newNetRig(t, mode)
	r.cp = apiserver.New(t)
	r.client = r.cp.Client()
	node := objects.Node("node1", "zone-a")
	for _, ip := range testnet.Node1Addrs.IPs() {
		node.Status.Addresses = append(node.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip.String()})
	}
	r.create(node)
	return r
}

// newNetRig is a rig without a control plane, its pods serving.
func newNetRig(t *testing.T, mode string) *rig {
	testnet.RequireKernel(t, "nft", "iptables-restore")
	r := &rig{t: t, mode: mode, net: testnet.New(t, testnet.Options{}), logs: logtest.New(4)}
	for _, p := range r.net.PodList {
		p.Serve(t, podPort)
	}
	return r
}

// start runs the proxy for node1 with kube-proxy's flags. Stopping it,
// by r.stop or at the end of the test, first checks that it counted no
// failure: no failed sync (not even one the retry healed), no netlink
// fallback, no failed conntrack cleaning.
func (r *rig) start(extra ...string) {
	r.t.Helper()
	opts := r.parse(append(r.args(), extra...)...)
	r.metrics = opts.Config.MetricsBindAddress
	r.agent.Store(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts, r.env()) }()
	r.stop = func() {
		r.t.Helper()
		r.checkNoFailures()
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("proxy: %v", err)
		}
	}
	r.t.Cleanup(func() {
		if ctx.Err() == nil {
			r.stop()
		}
	})
}

// synced waits until the running proxy has synced once.
func (r *rig) synced() {
	r.t.Helper()
	waitUntil(r.t, "the proxy's first sync", func() bool { a := r.agent.Load(); return a != nil && a.Status().Syncs > 0 })
}

// args are the flags every proxy of the rig starts with.
func (r *rig) args() []string {
	args := []string{
		"--hostname-override=node1", "--proxy-mode=" + r.mode,
		"--cluster-cidr=" + testnet.ClusterCIDRv4.String() + "," + testnet.ClusterCIDRv6.String(),
		"--healthz-bind-address=" + healthzAddr.String(), "--metrics-bind-address=" + metricsAddr.String(),
		"--conntrack-max-per-core=0",
	}
	if r.cp != nil {
		args = append(args, "--kubeconfig="+r.cp.Kubeconfig())
	}
	return args
}

// env runs the proxy's kernel work and servers in node1; it logs to the
// test's log and to r.logs.
func (r *rig) env() Env {
	node1 := r.net.Node1
	return Env{
		Do: node1.Do,
		Listen: func(network, addr string) (l net.Listener, err error) {
			err = node1.Do(func() error { l, err = net.Listen(network, addr); return err })
			return l, err
		},
		Started:       func(a *agent.Agent) { r.agent.Store(a) },
		Log:           r.logs.LoggerTo(r.t),
		OpenConntrack: r.open,
	}
}

// waitLog waits, boundedly, until the proxy has logged a line holding
// want.
func (r *rig) waitLog(want string) {
	r.t.Helper()
	waitUntil(r.t, fmt.Sprintf("the proxy logging %q", want), func() bool { return r.logs.Count(want) > 0 })
}

// checkNoFailures fails the test if the running proxy's metrics count any
// failure (metrics.Failures), reading them as Prometheus would.
func (r *rig) checkNoFailures() {
	r.t.Helper()
	code, body, err := nsrun.Get(context.Background(), r.net.Node1.Name, "http://"+r.metrics+"/metrics", 5*time.Second)
	if err != nil || code != http.StatusOK {
		r.t.Errorf("reading the proxy's metrics: %d %v", code, err)
		return
	}
	failures, err := metrics.Failures(bytes.NewReader(body))
	if err != nil || len(failures) > 0 {
		r.t.Errorf("the proxy counted failures: %v %v", failures, err)
	}
}

func (r *rig) parse(args ...string) *config.Options {
	r.t.Helper()
	opts, err := config.Parse(args)
	if err != nil {
		r.t.Fatal(err)
	}
	return opts
}

func (r *rig) create(obj any) {
	r.t.Helper()
	ctx := context.Background()
	var err error
	switch o := obj.(type) {
	case *v1.Node:
		_, err = r.client.CoreV1().Nodes().Create(ctx, o, metav1.CreateOptions{})
	case *v1.Service:
		_, err = r.client.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *discovery.EndpointSlice:
		_, err = r.client.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	}
	if err != nil {
		r.t.Fatalf("create %T: %v", obj, err)
	}
}

// setEndpoints replaces the web slice's endpoints, stamping the trigger
// time the EndpointSlice controller would.
func (r *rig) setEndpoints(eps ...discovery.Endpoint) {
	r.t.Helper()
	ctx := context.Background()
	s, err := r.client.DiscoveryV1().EndpointSlices("default").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	s.Endpoints = eps
	s.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: time.Now().Format(time.RFC3339Nano)}
	if _, err := r.client.DiscoveryV1().EndpointSlices("default").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) pod(name string) *testnet.Pod { return r.net.Pods[name] }

func (r *rig) endpoint(pod string, opts ...objects.EndpointOption) discovery.Endpoint {
	p := r.pod(pod)
	return objects.Endpoint(p.IPv4.String(), append([]objects.EndpointOption{objects.OnNode(p.Node)}, opts...)...)
}

// web is a NodePort Service on TCP and UDP with one slice.
func (r *rig) createWeb(pods ...string) {
	svc := objects.Service("default", "web", objects.ClusterIP(webIP), objects.Type(v1.ServiceTypeNodePort),
		objects.Port("http", v1.ProtocolTCP, 80, nodePort), objects.Port("dns", v1.ProtocolUDP, 80, nodePort))
	for i := range svc.Spec.Ports {
		svc.Spec.Ports[i].TargetPort.IntVal = podPort
	}
	r.create(svc)
	var eps []discovery.Endpoint
	for _, p := range pods {
		eps = append(eps, r.endpoint(p))
	}
	r.create(objects.Slice("default", "web-1", "web", discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, podPort), objects.EndpointPort("dns", v1.ProtocolUDP, podPort)}, eps...))
}

// answers asks dst n times from ns and returns the set of pods that
// answered; failures are errors.
func answers(ns *testnet.NS, proto string, dst netip.AddrPort, n int) (map[string]int, error) {
	got := map[string]int{}
	for range n {
		rep, err := ns.Ask(context.Background(), proto, dst, 2*time.Second)
		if err != nil {
			return got, err
		}
		got[rep.Pod]++
	}
	return got, nil
}

// eventually waits, boundedly, until the pods answering dst are exactly
// want.
func (r *rig) eventually(ns *testnet.NS, dst netip.AddrPort, want ...string) {
	r.t.Helper()
	r.within(20*time.Second, ns, dst, want...)
}

// within is eventually with a deadline.
func (r *rig) within(limit time.Duration, ns *testnet.NS, dst netip.AddrPort, want ...string) {
	r.t.Helper()
	var got map[string]int
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		got, err = answers(ns, "tcp", dst, 6*len(want))
		if err == nil && sameKeys(got, want) {
			return
		}
	}
	r.t.Fatalf("%s from %s: answered by %v (err %v), want exactly %v", dst, ns, got, err, want)
}

func sameKeys(got map[string]int, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if got[w] == 0 {
			return false
		}
	}
	return true
}

// get fetches http://addr/path from the external client namespace.
func (r *rig) get(addr netip.AddrPort, path string) (int, http.Header, string) {
	r.t.Helper()
	resp, err := r.net.Ext.Get(addr, path)
	if err != nil {
		r.t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	return resp.Code, resp.Header, resp.Body
}

func (r *rig) waitCode(addr netip.AddrPort, path string, want int) string {
	r.t.Helper()
	var resp testnet.Response
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if resp, err = r.net.Ext.Get(addr, path); err == nil && resp.Code == want {
			return resp.Body
		}
	}
	r.t.Fatalf("GET %s%s = %d %s (err %v), want %d", addr, path, resp.Code, resp.Body, err, want)
	return ""
}

// TestAPIServiceLifecycle: Services and EndpointSlices written with
// client-go reach the kernel; scaling, draining and deleting endpoints are
// followed; metrics and health answer.
func TestAPIServiceLifecycle(t *testing.T) { inEveryMode(t, testServiceLifecycle) }

func testServiceLifecycle(t *testing.T, mode string) {
	r := newRig(t, mode)
	r.createWeb("pod1a", "pod2a")
	r.start()
	r.eventually(r.net.Ext, node1Port, "pod1a", "pod2a")
	r.eventually(r.pod("pod1b").NS, clusterIP, "pod1a", "pod2a")

	// Scale up.
	r.setEndpoints(r.endpoint("pod1a"), r.endpoint("pod2a"), r.endpoint("pod1b"), r.endpoint("pod2b"))
	r.eventually(r.net.Ext, node1Port, "pod1a", "pod2a", "pod1b", "pod2b")

	// Drain pod2a: terminating but still serving, so not chosen while
	// others are ready.
	r.setEndpoints(r.endpoint("pod1a"), r.endpoint("pod2a", objects.Conditions(false, true, true)), r.endpoint("pod1b"), r.endpoint("pod2b"))
	r.eventually(r.net.Ext, node1Port, "pod1a", "pod1b", "pod2b")

	// Only terminating endpoints left: they keep serving.
	r.setEndpoints(r.endpoint("pod2a", objects.Conditions(false, true, true)))
	r.eventually(r.net.Ext, node1Port, "pod2a")

	// Delete every endpoint: the Service rejects.
	r.setEndpoints()
	r.waitRejected(node1Port)

	r.setEndpoints(r.endpoint("pod2b"))
	r.eventually(r.net.Ext, node1Port, "pod2b")

	r.checkHealthCheckNodePort()
	r.checkDualStack()
	r.checkOtherProxysService()

	// The API server records its own events too (ClusterIPNotAllocated for
	// default/kubernetes), so look for ours among them.
	events, err := r.client.EventsV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil || !hasEvent(events.Items, "Starting", "node1") {
		t.Errorf("want a Starting event about node1, got %v (err %v)", events, err)
	}

	code, _, body := r.get(metricsAddr, "/proxyMode")
	if code != 200 || body != mode {
		t.Errorf("/proxyMode = %d %q, want 200 %s", code, body, mode)
	}
	_, _, metricsBody := r.get(metricsAddr, "/metrics")
	for _, want := range []string{"kubeproxy_sync_proxy_rules_duration_seconds_count", `kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}`} {
		if !strings.Contains(metricsBody, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The Node goes away: /healthz fails so load balancers drain the node;
	// /livez stays 200 so the kubelet does not restart the proxy.
	r.waitCode(healthzAddr, "/healthz", 200)
	if err := r.client.CoreV1().Nodes().Delete(context.Background(), "node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	body = r.waitCode(healthzAddr, "/healthz", 503)
	if !strings.Contains(body, `"nodeEligible": false`) && !strings.Contains(body, `"nodeEligible":false`) {
		t.Errorf("/healthz body %s does not say the node is ineligible", body)
	}
	r.waitCode(healthzAddr, "/livez", 200)
}

// checkOtherProxysService: a Service labelled for another proxy gets no
// rules, while one created after it does.
func (r *rig) checkOtherProxysService() {
	r.t.Helper()
	ports := []discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, podPort)}
	for _, name := range []string{"other", "mine"} {
		ip := map[string]string{"other": "10.96.0.50", "mine": "10.96.0.51"}[name]
		svc := objects.Service("default", name, objects.ClusterIP(ip), objects.Port("http", v1.ProtocolTCP, 80, 0))
		svc.Spec.Ports[0].TargetPort.IntVal = podPort
		slice := objects.Slice("default", name+"-1", name, discovery.AddressTypeIPv4, ports, r.endpoint("pod1a"))
		if name == "other" {
			svc.Labels = map[string]string{source.LabelServiceProxyName: "someone-else"}
			slice.Labels[source.LabelServiceProxyName] = "someone-else"
		}
		r.create(svc)
		r.create(slice)
	}
	r.eventually(r.pod("pod1b").NS, netip.MustParseAddrPort("10.96.0.51:80"), "pod1a")
	if rep, err := r.pod("pod1b").NS.Ask(context.Background(), "tcp", netip.MustParseAddrPort("10.96.0.50:80"), time.Second); err == nil {
		r.t.Errorf("another proxy's Service answered (%v): svcproxy programmed it", rep)
	}
}

// checkDualStack: a RequireDualStack Service with one slice per family
// answers on both families' ClusterIPs and NodePorts.
func (r *rig) checkDualStack() {
	r.t.Helper()
	svc := objects.Service("default", "dual", objects.ClusterIPs("10.96.0.40", "fd00:10:96::40"), objects.IPFamilies(v1.IPFamilyPolicyRequireDualStack),
		objects.Type(v1.ServiceTypeNodePort), objects.Port("http", v1.ProtocolTCP, 80, 30081))
	svc.Spec.Ports[0].TargetPort.IntVal = podPort
	r.create(svc)
	ports := []discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, podPort)}
	r.create(objects.Slice("default", "dual-v4", "dual", discovery.AddressTypeIPv4, ports, r.endpoint("pod1a")))
	p := r.pod("pod2a")
	r.create(objects.Slice("default", "dual-v6", "dual", discovery.AddressTypeIPv6, ports, objects.Endpoint(p.IPv6.String(), objects.OnNode(p.Node))))
	r.eventually(r.net.Ext, netip.AddrPortFrom(testnet.Node1Addrs.LANv4, 30081), "pod1a")
	r.eventually(r.net.Ext, netip.AddrPortFrom(testnet.Node1Addrs.LANv6, 30081), "pod2a")
	r.eventually(r.pod("pod1b").NS, netip.MustParseAddrPort("[fd00:10:96::40]:80"), "pod2a")
}

// checkHealthCheckNodePort: a LoadBalancer Service with
// externalTrafficPolicy Local gets a health-check node port on node1 that
// answers 200 with a local endpoint and 503 without, in kube-proxy's shape.
func (r *rig) checkHealthCheckNodePort() {
	r.t.Helper()
	const hc = 32123
	svc := objects.Service("default", "local", objects.ClusterIP("10.96.0.20"), objects.Type(v1.ServiceTypeLoadBalancer),
		objects.Port("http", v1.ProtocolTCP, 80, 31080), objects.ExternalTrafficPolicyLocal(hc))
	r.create(svc)
	slice := objects.Slice("default", "local-1", "local", discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, podPort)}, r.endpoint("pod1a"), r.endpoint("pod2a"))
	r.create(slice)
	addr := netip.AddrPortFrom(testnet.Node1Addrs.LANv4, hc)
	body := r.waitCode(addr, "/", 200)
	want := "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"local\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
	if body != want {
		r.t.Errorf("health check node port body %q, want %q", body, want)
	}
	_, hdr, _ := r.get(addr, "/")
	if hdr.Get("Content-Type") != "application/json" || hdr.Get("X-Load-Balancing-Endpoint-Weight") != "1" || hdr.Get("X-Content-Type-Options") != "nosniff" {
		r.t.Errorf("health check node port headers %v", hdr)
	}
	if err := r.client.DiscoveryV1().EndpointSlices("default").Delete(context.Background(), "local-1", metav1.DeleteOptions{}); err != nil {
		r.t.Fatal(err)
	}
	r.create(objects.Slice("default", "local-2", "local", discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, podPort)}, r.endpoint("pod2a")))
	if body := r.waitCode(addr, "/", 503); !strings.Contains(body, `"localEndpoints": 0`) {
		r.t.Errorf("without a local endpoint: %s", body)
	}
}

func (r *rig) waitRejected(dst netip.AddrPort) {
	r.t.Helper()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err = r.net.Ext.Ask(context.Background(), "tcp", dst, time.Second); testnet.IsRefused(err) {
			return
		}
	}
	r.t.Fatalf("%s: %v, want connection refused (no endpoints)", dst, err)
}

// TestAPIServerOutage: with the apiserver gone for a minute, traffic keeps
// flowing on the rules in force; when it returns, the agent resyncs and
// follows changes made since.
func TestAPIServerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a minute")
	}
	// The modes run side by side: each mostly waits, for the minute and
	// for client-go's backoff.
	inEveryMode(t, func(t *testing.T, mode string) {
		t.Parallel()
		testServerOutage(t, mode)
	})
}

func testServerOutage(t *testing.T, mode string) {
	r := newRig(t, mode)
	r.createWeb("pod1a")
	r.start()
	r.eventually(r.net.Ext, node1Port, "pod1a")

	r.cp.StopAPIServer()
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(2 * time.Second) {
		if _, err := answers(r.net.Ext, "tcp", node1Port, 3); err != nil {
			t.Fatalf("traffic failed while the apiserver was down: %v", err)
		}
	}
	if err := r.cp.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	r.setEndpoints(r.endpoint("pod2a"), r.endpoint("pod2b"))
	// client-go's watches back off up to 30 s (with jitter) while the
	// apiserver is away, so the first change may wait that long.
	r.within(90*time.Second, r.net.Ext, node1Port, "pod2a", "pod2b")
	t.Logf("resynced %v after the apiserver returned", time.Since(back).Round(time.Second))
}

// TestAPIRestartWithoutDisruption: stopping the agent leaves the rules in
// force; a new agent starting over them replaces them atomically. An
// established UDP flow keeps its backend, and new connections succeed
// throughout.
func TestAPIRestartWithoutDisruption(t *testing.T) { inEveryMode(t, testRestartWithoutDisruption) }

func testRestartWithoutDisruption(t *testing.T, mode string) {
	r := newRig(t, mode)
	r.createWeb("pod1a", "pod2a")
	r.start()
	r.eventually(r.net.Ext, node1Port, "pod1a", "pod2a")

	flow, err := r.net.Ext.UDPConn(context.Background(), node1Port)
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	first, err := flow.Ask(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}

	var failures, asked atomic.Int64
	var wg sync.WaitGroup
	stopAsking := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stopAsking:
				return
			default:
			}
			asked.Add(1)
			if _, err := r.net.Ext.Ask(context.Background(), "tcp", node1Port, 2*time.Second); err != nil {
				failures.Add(1)
				t.Logf("during restart: %v", err)
			}
		}
	})
	r.stop()
	time.Sleep(500 * time.Millisecond) // no agent at all for a while
	old := r.agent.Load()
	r.start()
	waitUntil(t, "the new agent's first sync", func() bool { a := r.agent.Load(); return a != old && a != nil && a.Status().Syncs > 0 })
	// Some more connections over the new agent's rules.
	since := asked.Load()
	waitUntil(t, "10 connections after the new agent's first sync", func() bool { return asked.Load() >= since+10 })
	close(stopAsking)
	wg.Wait()
	if failures.Load() > 0 || asked.Load() < 10 {
		t.Fatalf("%d of %d new connections failed across the restart", failures.Load(), asked.Load())
	}
	for range 5 {
		rep, err := flow.Ask(2 * time.Second)
		if err != nil || rep.Pod != first.Pod {
			t.Fatalf("established UDP flow: %v %v, want it to stay on %s", rep, err, first.Pod)
		}
	}
	r.eventually(r.net.Ext, node1Port, "pod1a", "pod2a")
}

// waitUntil waits, boundedly, until ok; what names the condition.
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("%s: not within 20 s", what)
}

// hasEvent reports whether events holds one with the reason about the named object.
func hasEvent(events []eventsv1.Event, reason, regarding string) bool {
	for _, e := range events {
		if e.Reason == reason && e.Regarding.Name == regarding {
			return true
		}
	}
	return false
}
