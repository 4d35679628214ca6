package walkthrough

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/timescale"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// clientPod is the pod the walkthrough sends in-cluster requests from, as
// the seeds' `kubectl run curl-client --image=curlimages/curl`.
const clientPod = "curl-client"

// backend deploys the backend and its ClusterIP Service, and a client pod.
func (t *tour) backend(ctx context.Context) error {
	t.heading("1. The backend: a Deployment of 3 pods and a ClusterIP Service")
	if err := t.apply(ctx, "backend-deployment.yaml", "backend-service.yaml"); err != nil {
		return err
	}
	if err := t.kubectl(ctx, "rollout", "status", "deployment/backend-deployment", "--timeout=90s"); err != nil {
		return err
	}
	if err := t.waitProgrammed(ctx, "default/backend-service:backend", 3); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"get", "pods", "-l", "app=backend", "-o", "wide"},
		{"get", "service", "backend-service"},
		{"get", "endpointslices", "-l", "kubernetes.io/service-name=backend-service"},
	} {
		if err := t.kubectl(ctx, args...); err != nil {
			return err
		}
	}
	svc, err := t.client.CoreV1().Services("default").Get(ctx, "backend-service", metav1.GetOptions{})
	if err != nil {
		return err
	}
	t.report.BackendIP = svc.Spec.ClusterIP
	t.say("\nA client pod to send requests from. The lab does not know the curl image, so it runs its demo server instead and says so:")
	if err := t.kubectl(ctx, "run", clientPod, "--image=curlimages/curl"); err != nil {
		return err
	}
	if err := t.kubectl(ctx, "wait", "--for=condition=Ready", "pod/"+clientPod, "--timeout=60s"); err != nil {
		return err
	}
	return t.kubectl(ctx, "get", "events", "--field-selector", "reason=UnknownImage", "-o", "custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message")
}

// dns resolves the backend's name from the client pod through kube-dns.
func (t *tour) dns(ctx context.Context) error {
	t.heading("2. Cluster DNS and the kubernetes Service, from a pod")
	netns, err := t.st.Target(ctx, "default", clientPod)
	if err != nil {
		return err
	}
	t.say("$ svcproxy lab exec %s -- cat /etc/resolv.conf", clientPod)
	out, err := lab.Command(ctx, netns, "cat", "/etc/resolv.conf").CombinedOutput()
	if err != nil {
		return fmt.Errorf("cat /etc/resolv.conf in %s: %w: %s", clientPod, err, out)
	}
	t.say("%s", strings.TrimSpace(string(out)))
	name := "backend-service.default.svc." + lab.ClusterDomain
	addr, err := t.lookup(ctx, netns, name)
	if err != nil {
		return err
	}
	t.report.DNSAnswer = addr
	t.say("\n%s -> %s (answered by a coredns pod, reached through the kube-dns ClusterIP %s)", name, addr, lab.DNSIP)
	return t.kubernetesService(ctx, netns)
}

// kubernetesService shows the API server behind the default/kubernetes
// Service, and a pod reaching it by name: the in-cluster path every
// controller and operator uses.
func (t *tour) kubernetesService(ctx context.Context, netns string) error {
	t.say("\nThe kubernetes Service: its endpoint is the API server, %s:%d on the control-plane host.", lab.ControlPlaneIP, controlplane.APIServerPort)
	if err := t.kubectl(ctx, "get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes"); err != nil {
		return err
	}
	url := "https://kubernetes.default.svc/version"
	t.say("$ svcproxy lab exec %s -- curl -sk %s", clientPod, url)
	out, err := lab.Command(ctx, netns, "curl", "-sSk", "--max-time", "5", url).CombinedOutput()
	if err != nil {
		return fmt.Errorf("curl %s in %s: %w: %s", url, clientPod, err, out)
	}
	var version struct{ GitVersion string }
	if err := json.Unmarshal(out, &version); err != nil {
		return fmt.Errorf("curl %s in %s: %w: %s", url, clientPod, err, out)
	}
	t.report.APIServerVersion = version.GitVersion
	for _, line := range strings.Split(string(out), "\n") { // abridged
		if strings.Contains(line, `"major"`) || strings.Contains(line, `"minor"`) || strings.Contains(line, `"gitVersion"`) {
			t.say("%s", line)
		}
	}
	t.say("  ...")
	return nil
}

// lookup resolves name with the cluster DNS, from netns.
func (t *tour) lookup(ctx context.Context, netns, name string) (string, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return nsrun.Dial(ctx, netns, network, net.JoinHostPort(lab.DNSIP.String(), "53"))
	}}
	ctx, cancel := context.WithTimeout(ctx, timescale.Bound(5*time.Second))
	defer cancel()
	addrs, err := r.LookupHost(ctx, name+".")
	if err != nil || len(addrs) == 0 {
		return "", fmt.Errorf("resolve %s from %s: %v", name, netns, err)
	}
	return addrs[0], nil
}

// clusterIP sends requests from the client pod to the backend ClusterIP.
func (t *tour) clusterIP(ctx context.Context) error {
	t.heading("3. From a pod to the backend's ClusterIP: svcproxy spreads the connections")
	spread, err := t.spread(ctx, 30)
	t.report.ClusterIPSpread = spread
	if err != nil {
		return err
	}
	node := t.st.Nodes[0]
	url := "http://" + net.JoinHostPort(t.report.BackendIP, "3000") + "/"
	t.say("\nFrom %s itself (as after `minikube ssh`):\n$ svcproxy lab exec %s -- curl -s %s", node.Name, node.Name, url)
	a, err := t.getJSON(ctx, node.Netns, url)
	t.report.FromNode = Answer{Via: node.Name, Backend: a.Pod, ClientIP: a.Client}
	if err != nil {
		return fmt.Errorf("from %s to %s: %w", node.Name, url, err)
	}
	t.say("%s", a.raw)
	return t.overIPv6(ctx)
}

// overIPv6 makes the backend Service dual-stack and asks it over IPv6 from
// the client pod.
func (t *tour) overIPv6(ctx context.Context) error {
	t.say("\nThe lab is dual-stack: asked to, the Service gets an IPv6 ClusterIP too, with an IPv6 EndpointSlice.")
	if err := t.kubectl(ctx, "patch", "service", "backend-service", "-p", `{"spec":{"ipFamilyPolicy":"PreferDualStack"}}`); err != nil {
		return err
	}
	if err := t.kubectl(ctx, "get", "endpointslices", "-l", "kubernetes.io/service-name=backend-service"); err != nil {
		return err
	}
	svc, err := t.client.CoreV1().Services("default").Get(ctx, "backend-service", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if len(svc.Spec.ClusterIPs) != 2 {
		return fmt.Errorf("backend-service has ClusterIPs %v after PreferDualStack, want two", svc.Spec.ClusterIPs)
	}
	netns, err := t.st.Target(ctx, "default", clientPod)
	if err != nil {
		return err
	}
	url := "http://" + net.JoinHostPort(svc.Spec.ClusterIPs[1], "3000") + "/"
	t.say("$ svcproxy lab exec %s -- curl -s %s", clientPod, url)
	if err := t.waitAnswer(ctx, netns, url); err != nil {
		return err
	}
	a, err := t.getJSON(ctx, netns, url)
	t.report.IPv6 = Answer{Via: url, Backend: a.Pod, ClientIP: a.Client}
	if err != nil {
		return fmt.Errorf("from %s to %s: %w", clientPod, url, err)
	}
	t.say("%s", a.raw)
	return nil
}

// spread sends n requests from the client pod to the backend ClusterIP and
// prints how many each backend pod answered.
func (t *tour) spread(ctx context.Context, n int) (map[string]int, error) {
	netns, err := t.st.Target(ctx, "default", clientPod)
	if err != nil {
		return nil, err
	}
	url := "http://" + net.JoinHostPort(t.report.BackendIP, "3000") + "/"
	t.say("$ for i in $(seq %d); do svcproxy lab exec %s -- curl -s %s; done", n, clientPod, url)
	spread := map[string]int{}
	for i := range n {
		a, err := t.getJSON(ctx, netns, url)
		if err != nil {
			return spread, fmt.Errorf("request %d to %s: %w", i+1, url, err)
		}
		if i == 0 {
			t.say("%s", a.raw)
		}
		spread[a.Pod]++
	}
	t.say("\nanswers by backend pod:")
	t.table(spread)
	return spread, nil
}

// waitAnswer waits until url answers from netns: a new Service or node
// port answers once every node's svcproxy has synced it.
func (t *tour) waitAnswer(ctx context.Context, netns, url string) error {
	return lab.Poll(ctx, 30*time.Second, func() error {
		_, err := t.getJSON(ctx, netns, url)
		return err
	})
}

// waitSpread waits until n backend pods answer the client pod: new pods
// get traffic once the proxy of the client pod's node has synced them.
func (t *tour) waitSpread(ctx context.Context, n int) error {
	netns, err := t.st.Target(ctx, "default", clientPod)
	if err != nil {
		return err
	}
	url := "http://" + net.JoinHostPort(t.report.BackendIP, "3000") + "/"
	seen := map[string]bool{}
	return lab.Poll(ctx, 30*time.Second, func() error {
		for range 10 {
			if a, err := t.getJSON(ctx, netns, url); err == nil {
				seen[a.Pod] = true
			}
		}
		if len(seen) < n {
			return fmt.Errorf("%d of %d backend pods answered", len(seen), n)
		}
		return nil
	})
}

// nodePort deploys the frontend behind a NodePort Service and asks it
// through every node from the client.
func (t *tour) nodePort(ctx context.Context) error {
	t.heading("4. NodePort: the frontend from outside the cluster, through every node")
	if err := t.apply(ctx, "frontend-deployment.yaml", "frontend-service.yaml"); err != nil {
		return err
	}
	if err := t.kubectl(ctx, "rollout", "status", "deployment/frontend-deployment", "--timeout=90s"); err != nil {
		return err
	}
	if err := t.kubectl(ctx, "get", "service", "frontend-service"); err != nil {
		return err
	}
	port, err := t.nodePortOf(ctx)
	if err != nil {
		return err
	}
	t.say("\nFrom the client (%s), to each node's IP and the NodePort:", lab.ClientIP)
	for _, n := range t.st.Nodes {
		if err := t.waitAnswer(ctx, t.st.ClientNetns(), "http://"+net.JoinHostPort(n.IP.String(), port)+"/"); err != nil {
			return err
		}
	}
	for _, n := range t.st.Nodes {
		a := t.ask(ctx, n.Name, "http://"+net.JoinHostPort(n.IP.String(), port)+"/")
		t.report.NodePort = append(t.report.NodePort, a)
	}
	t.say("\nWith externalTrafficPolicy Cluster the node masquerades: the frontend sees an address of a node (its LAN IP,\n" +
		"or its side of the pod's veth when the pod is on that node), never the client's.")
	return nil
}

// nodePortOf returns the frontend Service's node port.
func (t *tour) nodePortOf(ctx context.Context) (string, error) {
	svc, err := t.client.CoreV1().Services("default").Get(ctx, "frontend-service", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].NodePort == 0 {
		return "", fmt.Errorf("service default/frontend-service has no node port")
	}
	return strconv.Itoa(int(svc.Spec.Ports[0].NodePort)), nil
}

// ask sends one request from the client and prints where it went.
func (t *tour) ask(ctx context.Context, via, url string) Answer {
	a, err := t.getJSON(ctx, t.st.ClientNetns(), url)
	ans := Answer{Via: via, Frontend: a.Pod, Backend: a.Backend.Pod, ClientIP: a.Client}
	if err != nil {
		ans.Err = err.Error()
		t.say("  %-8s %-32s  no answer: %v", via, url, err)
		return ans
	}
	t.say("  %-8s %-32s  frontend %s saw client %s, backend %s", via, url, a.Pod, a.Client, a.Backend.Pod)
	return ans
}

// loadBalancer makes the frontend a LoadBalancer Service.
func (t *tour) loadBalancer(ctx context.Context) error {
	t.heading("5. LoadBalancer: an address from the lab's pool, routed to the nodes")
	if err := t.apply(ctx, "frontend-loadbalancer.yaml"); err != nil {
		return err
	}
	ip, err := t.ingressIP(ctx)
	if err != nil {
		return err
	}
	if err := t.kubectl(ctx, "get", "service", "frontend-service"); err != nil {
		return err
	}
	// The pool routes the address to every node as soon as it hands it
	// out, as MetalLB announces it; a node whose svcproxy has not
	// programmed it yet would forward the first packets to its default
	// route, and the connections they open would fail. Wait for all.
	hasIP := func(p explain.Port) bool { return slices.Contains(p.LoadBalancerIPs, ip) }
	if err := t.waitPlanned(ctx, "default/frontend-service:frontend", "load-balancer IP "+ip, hasIP); err != nil {
		return err
	}
	if err := t.waitAnswer(ctx, t.st.ClientNetns(), "http://"+ip+"/"); err != nil { // and for the route
		return err
	}
	t.say("\nFrom the client to %s:80:", ip)
	for i := range 6 {
		t.report.LoadBalancer = append(t.report.LoadBalancer, t.ask(ctx, fmt.Sprintf("#%d", i+1), "http://"+ip+"/"))
	}
	return nil
}

// ingressIP waits for the frontend Service's load-balancer address.
func (t *tour) ingressIP(ctx context.Context) (string, error) {
	var ip string
	err := lab.Poll(ctx, 30*time.Second, func() error {
		svc, err := t.client.CoreV1().Services("default").Get(ctx, "frontend-service", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(svc.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("service default/frontend-service has no load-balancer ingress yet")
		}
		ip = svc.Status.LoadBalancer.Ingress[0].IP
		return nil
	})
	return ip, err
}

// local switches to externalTrafficPolicy Local with one frontend pod.
func (t *tour) local(ctx context.Context) error {
	t.heading("6. externalTrafficPolicy: Local keeps the client's IP; the health-check node port says which nodes have endpoints")
	if err := t.apply(ctx, "frontend-local.yaml"); err != nil {
		return err
	}
	if err := t.scaleTo(ctx, "frontend", 1); err != nil {
		return err
	}
	if err := t.kubectl(ctx, "get", "pods", "-l", "app=frontend", "-o", "wide"); err != nil {
		return err
	}
	if err := t.kubectl(ctx, "get", "service", "frontend-service"); err != nil {
		return err
	}
	if err := t.healthChecks(ctx); err != nil {
		return err
	}
	ip, err := t.ingressIP(ctx)
	if err != nil {
		return err
	}
	if err := t.waitRoute(ctx, ip); err != nil {
		return err
	}
	t.say("\nFrom the client to %s:80 (the load balancer sends traffic only to %s):", ip, t.report.LocalNode)
	for i := range 6 {
		t.report.Local = append(t.report.Local, t.ask(ctx, fmt.Sprintf("#%d", i+1), "http://"+ip+"/"))
	}
	t.say("\nThe frontend now sees the client's own address, %s.", lab.ClientIP)
	if err := t.traceNodePort(ctx); err != nil {
		return err
	}
	return t.scaleTo(ctx, "frontend", 3)
}

// healthChecks asks every node's health-check node port, from the client,
// once the nodes agree on where the one frontend pod is.
func (t *tour) healthChecks(ctx context.Context) error {
	svc, err := t.client.CoreV1().Services("default").Get(ctx, "frontend-service", metav1.GetOptions{})
	if err != nil {
		return err
	}
	hc := svc.Spec.HealthCheckNodePort
	pods, err := t.client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=frontend"})
	if err != nil || len(pods.Items) != 1 {
		return fmt.Errorf("want one frontend pod: %d, %v", len(pods.Items), err)
	}
	t.report.LocalNode = pods.Items[0].Spec.NodeName
	t.say("\nhealthCheckNodePort %d, asked on every node from the client (the frontend pod is on %s):", hc, t.report.LocalNode)
	var checks []HealthCheck
	err = lab.Poll(ctx, 20*time.Second, func() error {
		checks = t.askHealth(ctx, int(hc))
		for _, c := range checks {
			if (c.Status == 200) != (c.Node == t.report.LocalNode) {
				return fmt.Errorf("node %s answers %d", c.Node, c.Status)
			}
		}
		return nil
	})
	t.report.HealthChecks = checks
	for _, c := range checks {
		t.say("  %-8s %d  localEndpoints %d", c.Node, c.Status, c.LocalEndpoints)
	}
	return err
}

// traceNodePort asks svcproxy on a node without the frontend pod, then on
// the node with it, what it does with the client's connection to the
// NodePort: "why does NodePort on this node not answer?".
func (t *tour) traceNodePort(ctx context.Context) error {
	port, err := t.nodePortOf(ctx)
	if err != nil {
		return err
	}
	local, _ := t.st.Node(t.report.LocalNode)
	other := t.st.Nodes[0]
	if other.Name == local.Name {
		other = t.st.Nodes[1]
	}
	for _, n := range []lab.Node{other, local} {
		dst := net.JoinHostPort(n.IP.String(), port)
		t.say("\n$ svcproxy lab trace --node %s --src %s --dst %s", n.Name, lab.ClientIP, dst)
		pkt, err := explain.ParsePacket(lab.ClientIP.String(), dst, "tcp")
		if err != nil {
			return err
		}
		r, err := explain.Node{Netns: n.Netns}.Trace(ctx, pkt)
		if err != nil {
			return err
		}
		r.Write(t.w)
		t.report.Traces = append(t.report.Traces, NodeTrace{Node: n.Name, Result: r})
	}
	return nil
}

// waitRoute waits until the load balancer routes ip only via the node with
// the frontend pod, as a cloud load balancer would after its health checks.
func (t *tour) waitRoute(ctx context.Context, ip string) error {
	node, _ := t.st.Node(t.report.LocalNode)
	return lab.Poll(ctx, 20*time.Second, func() error {
		out, err := lab.Command(ctx, t.st.ClientNetns(), "ip", "route", "show", ip).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip route show %s: %w: %s", ip, err, out)
		}
		route := strings.TrimSpace(string(out))
		if !strings.Contains(route, "via "+node.IP.String()) || strings.Count(route, "via ") != 1 {
			return fmt.Errorf("client route to %s is %q, want via %s only", ip, route, node.IP)
		}
		return nil
	})
}

// scale scales the backend to 5 and shows the new spread.
func (t *tour) scale(ctx context.Context) error {
	t.heading("7. Scaling the backend to 5 pods: the new pods get traffic as soon as they are ready")
	if err := t.scaleTo(ctx, "backend", 5); err != nil {
		return err
	}
	if err := t.waitSpread(ctx, 5); err != nil {
		return err
	}
	spread, err := t.spread(ctx, 50)
	t.report.ScaledSpread = spread
	return err
}

// rules shows what svcproxy programmed for the backend Service on node1.
func (t *tour) rules(ctx context.Context) error {
	t.heading(fmt.Sprintf("9. What svcproxy programmed on node1 for default/backend-service (%s mode)", t.st.ProxyMode))
	svc, err := t.client.CoreV1().Services("default").Get(ctx, "backend-service", metav1.GetOptions{})
	if err != nil {
		return err
	}
	rules, err := serviceRules(ctx, t.st, svc)
	if err != nil {
		return err
	}
	t.report.Rules = rules
	t.say("%s", rules)
	return nil
}

// scaleTo scales a tier's Deployment and waits until exactly n of its pods
// exist and are ready (terminating ones gone), and every node's svcproxy
// has programmed exactly those n endpoints.
func (t *tour) scaleTo(ctx context.Context, tier string, n int) error {
	if err := t.kubectl(ctx, "scale", "deployment/"+tier+"-deployment", "--replicas="+strconv.Itoa(n)); err != nil {
		return err
	}
	if err := t.kubectl(ctx, "rollout", "status", "deployment/"+tier+"-deployment", "--timeout=90s"); err != nil {
		return err
	}
	if err := t.waitPods(ctx, "app="+tier, n); err != nil {
		return err
	}
	return t.waitProgrammed(ctx, "default/"+tier+"-service:"+tier, n)
}

// waitProgrammed waits until every node's svcproxy has synced exactly n
// endpoints for the service port, all of them ready.
func (t *tour) waitProgrammed(ctx context.Context, port string, n int) error {
	return t.waitPlanned(ctx, port, fmt.Sprintf("%d ready endpoints", n), func(p explain.Port) bool {
		return len(p.Endpoints) == n && !slices.ContainsFunc(p.Endpoints, func(e explain.Endpoint) bool { return !e.Ready })
	})
}

// waitPlanned waits until every node's svcproxy has the service port, as
// ok wants it (what says how), in a plan it has finished syncing without
// error, asking each one's status.
func (t *tour) waitPlanned(ctx context.Context, port, what string, ok func(explain.Port) bool) error {
	return lab.Poll(ctx, 30*time.Second, func() error {
		for _, node := range t.st.Nodes {
			s, err := explain.Node{Netns: node.Netns}.Status(ctx)
			if err != nil {
				return err
			}
			i := slices.IndexFunc(s.Ports, func(p explain.Port) bool { return p.Service == port })
			if i < 0 || !ok(s.Ports[i]) || s.Sync.InProgress || s.Sync.Error != "" {
				return fmt.Errorf("svcproxy on %s has not synced %s of %s yet (last sync error: %q)", node.Name, what, port, s.Sync.Error)
			}
		}
		return nil
	})
}

// waitPods waits until exactly n pods match selector, all ready and none
// terminating.
func (t *tour) waitPods(ctx context.Context, selector string, n int) error {
	return lab.Poll(ctx, 60*time.Second, func() error {
		pods, err := t.client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && lab.PodReady(&p) {
				ready++
			}
		}
		if len(pods.Items) != n || ready != n {
			return fmt.Errorf("%s: %d pods, %d ready, want %d", selector, len(pods.Items), ready, n)
		}
		return nil
	})
}
