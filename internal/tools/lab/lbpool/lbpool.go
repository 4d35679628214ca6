// Package lbpool is the lab's load-balancer controller, the part MetalLB or
// `minikube tunnel` plays in the seeds: it gives every LoadBalancer Service
// an ingress IP from the lab's pool, and makes that IP (and a Service's
// external IPs from the pool) reachable from the client namespace by a
// multipath route over the nodes a cloud load balancer would send traffic
// to. Like one, it health-checks the nodes from outside: the Service's
// healthCheckNodePort for externalTrafficPolicy Local (only nodes with a
// ready local endpoint answer 200), the proxy's /healthz on 10256
// otherwise. When no node is healthy it fails open, to all nodes.
package lbpool

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/svcproxy/svcproxy/internal/netwire"
	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// Timing: how often everything is reconciled, and the bound on one health
// check.
const (
	period       = time.Second
	checkTimeout = 500 * time.Millisecond
)

// proxyHealthPort is where svcproxy (as kube-proxy) serves /healthz.
const proxyHealthPort = 10256

// Controller assigns and routes load-balancer addresses.
type Controller struct {
	lab      *lab.State
	client   kubernetes.Interface
	outside  *netwire.NS // the client's namespace, where the routes go
	services listersv1.ServiceLister
	logf     func(string, ...any)
	routes   map[netip.Addr]string // routed address -> its nodes, as installed
}

// Run reconciles until ctx ends.
func Run(ctx context.Context, st *lab.State, client kubernetes.Interface, logf func(string, ...any)) error {
	factory := informers.NewSharedInformerFactory(client, 0)
	svcs := factory.Core().V1().Services()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := svcs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke,
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	defer factory.Shutdown()
	outside, err := netwire.Open(st.ClientNetns())
	if err != nil {
		return err
	}
	defer outside.Close()
	c := &Controller{lab: st, client: client, outside: outside, services: svcs.Lister(), logf: logf, routes: map[netip.Addr]string{}}
	if err := outside.FlushRoutes(lab.LBPool); err != nil {
		return err
	}
	logf("lbpool: assigning %s, routing from %s", lab.LBPool, st.ClientNetns())
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		c.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
	}
}

// reconcile assigns missing addresses, then routes every pool address.
func (c *Controller) reconcile(ctx context.Context) {
	all, err := c.services.List(labels.Everything())
	if err != nil {
		c.logf("lbpool: %v", err)
		return
	}
	slices.SortFunc(all, func(a, b *corev1.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	c.assign(ctx, all)
	c.route(ctx, all)
}

// assign gives each LoadBalancer Service without one an ingress IP: its
// spec.loadBalancerIP if that is in the pool and free, else the lowest free
// address. Services that are no longer LoadBalancers lose theirs.
func (c *Controller) assign(ctx context.Context, all []*corev1.Service) {
	used := map[netip.Addr]bool{}
	for _, svc := range all {
		for _, a := range ingressIPs(svc) {
			used[a] = true
		}
	}
	for _, svc := range all {
		want := wantsAddress(svc)
		has := len(ingressIPs(svc)) > 0
		switch {
		case want && !has:
			ip, err := pick(svc, used)
			if err != nil {
				c.logf("lbpool: service %s/%s: %v", svc.Namespace, svc.Name, err)
				continue
			}
			used[ip] = true
			c.setIngress(ctx, svc, []corev1.LoadBalancerIngress{{IP: ip.String(), IPMode: ptr(corev1.LoadBalancerIPModeVIP)}})
		case !want && has && svc.Spec.Type != corev1.ServiceTypeLoadBalancer:
			c.setIngress(ctx, svc, nil)
		}
	}
}

// wantsAddress reports whether the Service is ours to give an address.
func wantsAddress(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.LoadBalancerClass == nil
}

// pick chooses a free pool address for svc.
func pick(svc *corev1.Service, used map[netip.Addr]bool) (netip.Addr, error) {
	if req := svc.Spec.LoadBalancerIP; req != "" {
		a, err := netip.ParseAddr(req)
		switch {
		case err != nil || !lab.LBPool.Contains(a):
			return netip.Addr{}, fmt.Errorf("spec.loadBalancerIP %q is not in the pool %s", req, lab.LBPool)
		case used[a]:
			return netip.Addr{}, fmt.Errorf("spec.loadBalancerIP %s is taken", a)
		}
		return a, nil
	}
	for a := lab.LBPool.Addr().Next(); lab.LBPool.Contains(a.Next()); a = a.Next() {
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("the pool %s is exhausted", lab.LBPool)
}

// setIngress writes the Service's load-balancer status.
func (c *Controller) setIngress(ctx context.Context, svc *corev1.Service, ingress []corev1.LoadBalancerIngress) {
	upd := svc.DeepCopy()
	upd.Status.LoadBalancer.Ingress = ingress
	if _, err := c.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil {
		c.logf("lbpool: service %s/%s: status: %v", svc.Namespace, svc.Name, err)
		return
	}
	c.logf("lbpool: service %s/%s: ingress %v", svc.Namespace, svc.Name, ingress)
}

// ingressIPs are the Service's load-balancer addresses in the pool.
func ingressIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil && lab.LBPool.Contains(a) {
			out = append(out, a)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// route installs a route in the client namespace for every pool address
// of a Service, over the nodes that pass its health check, and removes
// routes to addresses no Service has any more.
func (c *Controller) route(ctx context.Context, all []*corev1.Service) {
	want := map[netip.Addr]string{}
	checks := map[string]bool{} // "node:port" -> healthy, once per reconcile
	for _, svc := range all {
		addrs := ingressIPs(svc)
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && len(addrs) == 0 {
			continue
		}
		for _, s := range svc.Spec.ExternalIPs {
			if a, err := netip.ParseAddr(s); err == nil && lab.LBPool.Contains(a) {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			continue
		}
		nodes := c.healthyNodes(ctx, svc, checks)
		for _, a := range addrs {
			want[a] = strings.Join(nodes, ",")
		}
	}
	for a, nodes := range want {
		if c.routes[a] != nodes {
			c.install(ctx, a, nodes)
		}
	}
	for a := range c.routes {
		if _, ok := want[a]; !ok {
			c.remove(ctx, a)
		}
	}
}

// healthyNodes returns the names of the nodes that pass svc's health check,
// or all nodes if none does.
func (c *Controller) healthyNodes(ctx context.Context, svc *corev1.Service, checks map[string]bool) []string {
	port, path := proxyHealthPort, "/healthz"
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal && svc.Spec.HealthCheckNodePort != 0 {
		port, path = int(svc.Spec.HealthCheckNodePort), "/"
	}
	var healthy, all []string
	for _, n := range c.lab.Nodes {
		all = append(all, n.Name)
		key := fmt.Sprintf("%s:%d%s", n.IP, port, path)
		ok, seen := checks[key]
		if !seen {
			ok = c.check(ctx, "http://"+key)
			checks[key] = ok
		}
		if ok {
			healthy = append(healthy, n.Name)
		}
	}
	if len(healthy) == 0 {
		return all
	}
	return healthy
}

// check sends one health check from the client namespace.
func (c *Controller) check(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	code, _, err := nsrun.Get(ctx, c.lab.ClientNetns(), url, 0) // ctx bounds it
	return err == nil && code == http.StatusOK
}

// install routes a through the named nodes (comma-separated).
func (c *Controller) install(ctx context.Context, a netip.Addr, nodes string) {
	r := netwire.Route{Dst: netip.PrefixFrom(a, 32), Dev: "eth0"}
	for _, name := range strings.Split(nodes, ",") {
		n, _ := c.lab.Node(name)
		r.Nexthops = append(r.Nexthops, n.IP)
	}
	if err := c.outside.ReplaceRoute(r); err != nil {
		c.logf("lbpool: %v", err)
		return
	}
	c.routes[a] = nodes
	c.logf("lbpool: %s routed via %s", a, nodes)
}

// remove deletes the route to a.
func (c *Controller) remove(ctx context.Context, a netip.Addr) {
	if err := c.outside.DeleteRoute(netip.PrefixFrom(a, 32)); err != nil {
		c.logf("lbpool: %v", err)
	}
	delete(c.routes, a)
}
