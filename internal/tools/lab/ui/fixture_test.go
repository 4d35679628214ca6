package ui

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// cluster is a made-up lab for the page: nodes × podsPerNode pods and
// services Services, Service i with pod i%podsPerNode of every node as its
// endpoints. Every 10th Service is a LoadBalancer, every 20th of them
// with externalTrafficPolicy Local, every 5th a NodePort; every 10th pod
// is terminating and every 15th not ready.
type cluster struct {
	st        *lab.State
	objects   []runtime.Object
	pods      map[string][]string // by node: "namespace/name"
	endpoints []netip.AddrPort
	local     []string // the Local Services, "namespace/name"
}

func newCluster(t testing.TB, nodes, podsPerNode, services int) *cluster {
	st, err := lab.NewState("lab", nodes, "svcproxy", "nftables")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{st: st, pods: map[string][]string{}}
	for _, n := range st.Nodes {
		node := objects.Node(n.Name, n.Zone)
		node.Spec.PodCIDRs = []string{n.PodCIDR.String()}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		c.objects = append(c.objects, node)
		for i := range podsPerNode {
			c.objects = append(c.objects, c.pod(n, i))
		}
	}
	for i := range services {
		c.objects = append(c.objects, c.service(i, podsPerNode)...)
	}
	return c
}

func (c *cluster) pod(n lab.Node, i int) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("app%02d-deployment-5c9f7d6b4-%s", i, n.Name), UID: "uid"},
		Spec:       corev1.PodSpec{NodeName: n.Name},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: n.PodIP(i).String()}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if i%10 == 9 {
		p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	}
	if i%15 == 14 {
		p.Status.Conditions[0].Status = corev1.ConditionFalse
	}
	c.pods[n.Name] = append(c.pods[n.Name], p.Namespace+"/"+p.Name)
	return p
}

// service returns Service i and its EndpointSlice.
func (c *cluster) service(i, podsPerNode int) []runtime.Object {
	name := fmt.Sprintf("svc%03d", i)
	opts := []objects.ServiceOption{objects.ClusterIPs(fmt.Sprintf("10.96.%d.%d", i/200, i%200+20)), objects.Port("http", corev1.ProtocolTCP, 80, 0)}
	switch {
	case i%10 == 0:
		opts = append(opts, objects.Type(corev1.ServiceTypeLoadBalancer), objects.NodePort(int32(30000+i)),
			objects.LoadBalancerIngress(fmt.Sprintf("203.0.113.%d", i/10+1), corev1.LoadBalancerIPModeVIP))
		if i%20 == 0 {
			opts = append(opts, objects.ExternalTrafficPolicyLocal(int32(32000+i)))
			c.local = append(c.local, "default/"+name)
		}
	case i%5 == 0:
		opts = append(opts, objects.NodePort(int32(30000+i)))
	}
	var eps []discovery.Endpoint
	for _, n := range c.st.Nodes {
		ip := n.PodIP(i % podsPerNode)
		ep := objects.Endpoint(ip.String(), objects.OnNode(n.Name), objects.Ready(true))
		ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("app%02d-deployment-5c9f7d6b4-%s", i%podsPerNode, n.Name)}
		eps = append(eps, ep)
		c.endpoints = append(c.endpoints, netip.AddrPortFrom(ip, 8080))
	}
	slice := objects.Slice("default", name+"-abcde", name, discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", corev1.ProtocolTCP, 8080)}, eps...)
	return []runtime.Object{objects.Service("default", name, opts...), slice}
}

// serve serves the page of the made-up cluster with made-up node answers
// and returns its address.
func (c *cluster) serve(t testing.TB) (string, *fakeNodes) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	nodes := &fakeNodes{c: c, flows: map[string][]Flow{}}
	srv := New(Options{Lab: c.st, Client: fake.NewClientset(c.objects...), Nodes: nodes, Logf: t.Logf})
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return "http://" + l.Addr().String() + "/", nodes
}

// fakeNodes answers for made-up nodes: every node's conntrack table gains
// a connection to each of a few endpoints per dump, in turn.
type fakeNodes struct {
	c     *cluster
	mu    sync.Mutex
	dumps int
	flows map[string][]Flow
}

func (f *fakeNodes) Flows(_ context.Context, n lab.Node) ([]Flow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dumps++
	for k := range 5 {
		ep := f.c.endpoints[(f.dumps*5+k)%len(f.c.endpoints)]
		src := netip.AddrPortFrom(lab.ClientIP, uint16(10000+f.dumps*5+k))
		f.flows[n.Name] = append(f.flows[n.Name], Flow{Protocol: "TCP", Src: src, Dst: netip.MustParseAddrPort("10.96.0.20:80"), Endpoint: ep})
	}
	if len(f.flows[n.Name]) > 500 {
		f.flows[n.Name] = f.flows[n.Name][100:]
	}
	return append([]Flow(nil), f.flows[n.Name]...), nil
}

func (f *fakeNodes) Proxy(context.Context, lab.Node) ProxyView {
	return ProxyView{Healthz: 200, LastSync: time.Now().Add(-2 * time.Second), Took: "1.2ms", Syncs: 12}
}

// HealthCheck: only node1 has local endpoints.
func (f *fakeNodes) HealthCheck(_ context.Context, n lab.Node, port int) HealthCheckView {
	if n.Name == "node1" {
		return HealthCheckView{Port: port, Status: 200, LocalEndpoints: 1}
	}
	return HealthCheckView{Port: port, Status: 503}
}

// Routes: every load-balancer address to node1.
func (f *fakeNodes) Routes(context.Context) ([]Route, error) {
	var out []Route
	for _, o := range f.c.objects {
		if svc, ok := o.(*corev1.Service); ok {
			for _, in := range svc.Status.LoadBalancer.Ingress {
				out = append(out, Route{Address: in.IP, Nodes: []string{"node1"}})
			}
		}
	}
	return out, nil
}

// Trace answers as a node whose kernel still sends to an endpoint the
// plan no longer has: three paths, the third one red.
func (f *fakeNodes) Trace(_ context.Context, n lab.Node, pkt plan.Packet) (*explain.Result, error) {
	steps := []string{"nat-prerouting: jump services", "services: ip daddr . meta l4proto . th dport vmap @service-ips",
		"  @service-ips: " + pkt.Dst.Addr().String() + " . tcp . 80 : goto svc-X", "svc-X: goto lb-endpoints-tcp-3",
		"lb-endpoints-tcp-3: dnat ip to ip daddr . tcp dport . numgen random mod 3 map @endpoints-tcp-g0"}
	var paths []explain.Path
	eps := []string{"10.244.1.2:8080", "10.244.2.2:8080", "10.244.3.2:8080"}
	for i, ep := range eps {
		paths = append(paths, explain.Path{Probability: 1.0 / 3, Action: "FORWARD", Endpoint: ep,
			Steps: append(append([]string(nil), steps...), fmt.Sprintf("  @endpoints-tcp-g0: %s . 80 . %d : %s", pkt.Dst.Addr(), i, ep))})
	}
	from := pkt.Src.String()
	if pkt.FromHost {
		from += " (this node)"
	}
	return &explain.Result{Packet: "tcp " + from + " -> " + pkt.Dst.String(), Mode: "nftables", Paths: paths,
		Kernel:   explain.Verdict{Action: "FORWARD", Endpoints: eps},
		Plan:     explain.Verdict{Action: "FORWARD", Endpoints: eps[:2], Reason: "cluster IP from outside the cluster"},
		Problems: []string{"the kernel sends to 10.244.3.2:8080, which the plan does not"}}, nil
}
