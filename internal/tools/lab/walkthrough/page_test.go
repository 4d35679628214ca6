package walkthrough_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/testkit/browser"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
	"github.com/svcproxy/svcproxy/internal/tools/lab/ui/uitest"
)

// EnvScreenshot names a file to which checkPage writes a picture of the
// nftables lab's page once its checks pass (the README's docs/lab-ui.png).
const EnvScreenshot = "SVCPROXY_UI_SCREENSHOT"

// clientPod is the walkthrough's client pod; it serves the jobs API on
// 8080 too.
const clientPod = "curl-client"

// checkPage opens the lab's page in Chromium, as a person would after
// `svcproxy lab up`, in the lab the walkthrough left: the nodes, their
// pods and the Services are drawn as the API has them; the counters of
// backend-service's endpoints rise while the test sends it requests; the
// health-check node port of a new Local NodePort Service answers 200 only
// on its endpoint's node, and the page's trace of that NodePort on
// another node shows DROP (FORWARD on the endpoint's node).
func checkPage(ctx context.Context, t *testing.T, st *lab.State) {
	t.Helper()
	if _, err := browser.Executable(); err != nil {
		t.Fatal(err)
	}
	client, err := st.Client()
	if err != nil {
		t.Fatal(err)
	}
	p := uitest.Open(t, st.UI)
	checkDrawn(ctx, t, p, st, client)
	checkCounters(ctx, t, p, st)
	endpointNode, nodePort := localNodePort(ctx, t, client)
	checkLocalNodePort(ctx, t, p, st, endpointNode, nodePort)
	if path := os.Getenv(EnvScreenshot); path != "" && st.ProxyMode == "nftables" {
		picture(ctx, t, p, st, path)
	}
}

// checkDrawn waits until the page draws every node with the pods the API
// has on it, and every Service.
func checkDrawn(ctx context.Context, t *testing.T, p *browser.Page, st *lab.State, client kubernetes.Interface) {
	t.Helper()
	err := lab.Poll(ctx, 30*time.Second, func() error {
		pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		want := map[string][]string{}
		for _, pod := range pods.Items {
			want[pod.Spec.NodeName] = append(want[pod.Spec.NodeName], pod.Namespace+"/"+pod.Name)
		}
		nodes, err := uitest.Nodes(p)
		if err != nil || len(nodes) != len(st.Nodes) {
			return fmt.Errorf("nodes drawn: %v %v", nodes, err)
		}
		for i, n := range st.Nodes {
			drawn, err := uitest.Pods(p, n.Name)
			slices.Sort(drawn)
			slices.Sort(want[n.Name])
			if err != nil || nodes[i] != n.Name || !slices.Equal(drawn, want[n.Name]) {
				return fmt.Errorf("%s: pods drawn %v (%v), the API has %v", n.Name, drawn, err, want[n.Name])
			}
		}
		return servicesDrawn(ctx, p, client)
	})
	if err != nil {
		t.Error(err)
	}
}

func servicesDrawn(ctx context.Context, p *browser.Page, client kubernetes.Interface) error {
	svcs, err := client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var want []string
	for _, s := range svcs.Items {
		want = append(want, s.Namespace+"/"+s.Name)
	}
	drawn, err := uitest.Services(p)
	slices.Sort(want)
	if err != nil || !slices.Equal(drawn, want) {
		return fmt.Errorf("Services drawn: %v (%v), the API has %v", drawn, err, want)
	}
	return nil
}

// checkCounters sends requests from the client pod to backend-service's
// ClusterIP, ten at a time, until the page has counted a new connection
// on each of its (IPv4) endpoints, and wants it to count every request.
func checkCounters(ctx context.Context, t *testing.T, p *browser.Page, st *lab.State) {
	t.Helper()
	const service = "default/backend-service"
	before := ipv4Totals(t, p, service)
	if len(before) < 2 {
		t.Fatalf("%s: endpoints drawn %v, want the walkthrough's (5)", service, before)
	}
	netns, err := st.Target(ctx, "default", clientPod)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + net.JoinHostPort(serviceIP(ctx, t, st, "backend-service"), "3000") + "/"
	sent := 0
	err = lab.Poll(ctx, 60*time.Second, func() error {
		for range 10 {
			if code, _, err := nsrun.Get(ctx, netns, url, lab.RequestTimeout); err != nil || code != 200 {
				return fmt.Errorf("GET %s from %s: %d %v", url, clientPod, code, err)
			}
			sent++
		}
		rose := risen(before, ipv4Totals(t, p, service))
		if len(rose) < len(before) {
			return fmt.Errorf("after %d requests, the page counted new connections on %v of %v", sent, rose, slices.Sorted(maps.Keys(before)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = lab.Poll(ctx, 10*time.Second, func() error {
		counted := 0
		for key, c := range ipv4Totals(t, p, service) {
			counted += c.Total - before[key].Total
		}
		if counted < sent {
			return fmt.Errorf("the page counted %d new connections to %s's endpoints, the test sent %d", counted, service, sent)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	t.Logf("%d requests to %s: the page counted them on every endpoint", sent, service)
}

// ipv4Totals reads the counters of a Service's IPv4 endpoints.
func ipv4Totals(t *testing.T, p *browser.Page, service string) map[string]uitest.Counter {
	t.Helper()
	all, err := uitest.Endpoints(p, service)
	if err != nil {
		t.Fatal(err)
	}
	maps.DeleteFunc(all, func(key string, _ uitest.Counter) bool { return strings.Contains(key, "[") })
	return all
}

// risen lists the endpoints whose total rose.
func risen(before, after map[string]uitest.Counter) []string {
	var out []string
	for key, c := range after {
		if c.Total > before[key].Total {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}

func serviceIP(ctx context.Context, t *testing.T, st *lab.State, name string) string {
	t.Helper()
	client, err := st.Client()
	if err != nil {
		t.Fatal(err)
	}
	svc, err := client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

// localNodePort creates a LoadBalancer Service (so that it has a
// health-check node port) with externalTrafficPolicy Local in front of
// the client pod, its one endpoint, and returns that pod's node and the
// Service's node port.
func localNodePort(ctx context.Context, t *testing.T, client kubernetes.Interface) (string, int32) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "page-local", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Selector: map[string]string{"run": clientPod},
			Ports:    []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	svc, err := client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := client.CoreV1().Pods("default").Get(ctx, clientPod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod.Spec.NodeName, svc.Spec.Ports[0].NodePort
}

// checkLocalNodePort waits until the page draws the Service's health-check
// answers (200 on the endpoint's node, 503 elsewhere), then traces the
// client's connection to the node port on every node.
func checkLocalNodePort(ctx context.Context, t *testing.T, p *browser.Page, st *lab.State, endpointNode string, nodePort int32) {
	t.Helper()
	const service = "default/page-local"
	err := lab.Poll(ctx, 30*time.Second, func() error {
		got, err := uitest.HealthChecks(p, service)
		for _, n := range st.Nodes {
			if want := map[bool]int{true: 200, false: 503}[n.Name == endpointNode]; err != nil || got[n.Name] != want {
				return fmt.Errorf("health-check answers drawn for %s: %v (%v); the endpoint is on %s", service, got, err, endpointNode)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	for _, n := range st.Nodes {
		want := map[bool]string{true: "FORWARD", false: "DROP"}[n.Name == endpointNode]
		dst := fmt.Sprintf("%s:%d|TCP", n.IP, nodePort)
		if got, err := uitest.Trace(p, "client", dst, ""); err != nil || got != want {
			t.Errorf("the page's trace from the client to %s's node port %s: %q (%v), want %s (the endpoint is on %s)", service, dst, got, err, want, endpointNode)
		}
	}
}

// picture takes the README's picture: backend-service selected while it
// takes requests, and the paths of a pod's connection to it.
func picture(ctx context.Context, t *testing.T, p *browser.Page, st *lab.State, path string) {
	t.Helper()
	ip := serviceIP(ctx, t, st, "backend-service")
	if err := uitest.Select(p, "default/backend-service"); err != nil {
		t.Fatal(err)
	}
	if got, err := uitest.Trace(p, "pod:default/"+clientPod, ip+":3000|TCP", ""); err != nil || got != "FORWARD" {
		t.Fatalf("trace from %s to backend-service: %q %v", clientPod, got, err)
	}
	netns, err := st.Target(ctx, "default", clientPod)
	if err != nil {
		t.Fatal(err)
	}
	for range 30 {
		nsrun.Get(ctx, netns, "http://"+net.JoinHostPort(ip, "3000")+"/", lab.RequestTimeout)
	}
	if err := p.WaitFor(`[...document.querySelectorAll('g.pod')].some(e => +e.dataset.window > 0)`, 10*time.Second); err != nil {
		t.Error(err)
	}
	if err := p.Screenshot(path); err != nil {
		t.Fatal(err)
	}
	t.Logf("the page's picture: %s", path)
}
