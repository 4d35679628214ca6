package proxy

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/agent"
	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/proxy/metrics"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// TestAPISchedulerAnnotation, in nftables mode against a real API server:
// a Service annotated rr takes its endpoints in strict turn through the
// agent's rules; one annotated lc, which nftables cannot express, gets a
// Warning Event SchedulerNotSupported on the Service (its UID set, as
// `kubectl describe service` looks for), a status line and the gauge.
func TestAPISchedulerAnnotation(t *testing.T) {
	r := newRig(t, "nftables")
	rr := r.createAnnotated("rr", "10.96.0.21", "rr", "pod1b", "pod2a", "pod2b")
	lc := r.createAnnotated("lc", "10.96.0.22", "lc", "pod2a", "pod2b")
	r.start()
	r.eventually(r.pod("pod1a").NS, rr, "pod1b", "pod2a", "pod2b")
	var order []string
	for range 9 {
		rep, err := r.pod("pod1a").NS.Ask(context.Background(), "tcp", rr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, rep.Pod)
	}
	for i := 3; i < len(order); i++ {
		if order[i] != order[i-3] || order[i] == order[i-1] {
			rules, _ := r.net.Node1.Exec(context.Background(), "nft", "list", "table", "ip", "svcproxy")
			_, _, status := r.get(metricsAddr, explain.StatusPath)
			t.Fatalf("rr Service: %v is not a strict rotation over three endpoints\nstatus: %s\n%s", order, status, rules)
		}
	}
	r.eventually(r.pod("pod1a").NS, lc, "pod2a", "pod2b")

	svc, err := r.client.CoreV1().Services("default").Get(context.Background(), "lc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a SchedulerNotSupported Event on default/lc", func() bool {
		events, err := r.client.EventsV1().Events("default").List(context.Background(), metav1.ListOptions{})
		for _, e := range events.Items {
			if err == nil && e.Reason == agent.ReasonSchedulerNotSupported && e.Regarding.Kind == "Service" &&
				e.Regarding.Name == "lc" && e.Regarding.UID == svc.UID && e.Type == v1.EventTypeWarning &&
				strings.Contains(e.Note, `scheduler "lc" (annotation svcproxy.io/scheduler) cannot be expressed by the nftables dataplane`) {
				return true
			}
		}
		return false
	})
	_, _, body := r.get(metricsAddr, explain.StatusPath)
	var st explain.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("status %q: %v", body, err)
	}
	for _, p := range st.Ports {
		if want := map[string]string{"default/lc:http": "lc", "default/rr:http": ""}[p.Service]; p.Scheduling.Unsupported == "" == (want != "") {
			t.Errorf("status of %s: scheduling %+v", p.Service, p.Scheduling)
		}
	}
	if _, _, page := r.get(metricsAddr, "/metrics"); !strings.Contains(page, "\n"+metrics.SchedulerNotSupportedName+" 1\n") {
		t.Errorf("/metrics lacks %s 1", metrics.SchedulerNotSupportedName)
	}
}

// createAnnotated creates a TCP ClusterIP Service choosing scheduler, with
// the pods as its endpoints, and returns its address.
func (r *rig) createAnnotated(name, ip, scheduler string, pods ...string) netip.AddrPort {
	svc := objects.Service("default", name, objects.ClusterIP(ip), objects.Port("http", v1.ProtocolTCP, 80, 0),
		objects.Annotation(plan.AnnotationScheduler, scheduler))
	svc.Spec.Ports[0].TargetPort.IntVal = podPort
	r.create(svc)
	var eps []discovery.Endpoint
	for _, p := range pods {
		eps = append(eps, r.endpoint(p))
	}
	r.create(objects.Slice("default", name+"-1", name, discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, podPort)}, eps...))
	return netip.AddrPortFrom(netip.MustParseAddr(ip), 80)
}
