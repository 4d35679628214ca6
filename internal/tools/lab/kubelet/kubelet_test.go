package kubelet

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcproxy/svcproxy/internal/tools/lab"
	"github.com/svcproxy/svcproxy/internal/tools/lab/workload"
)

func newKubelet(t *testing.T, objs ...corev1.Node) (*Kubelet, *fake.Clientset) {
	t.Helper()
	st, err := lab.NewState("t", 2, "x", "nftables")
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	for _, n := range objs {
		if _, err := client.CoreV1().Nodes().Create(context.Background(), &n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return &Kubelet{lab: st, node: st.Nodes[1], client: client, logf: t.Logf, images: workload.Images("/nonexistent/coredns"), backoff: time.Millisecond,
		pods: map[types.UID]*pod{}, ips: map[netip.Addr]bool{}}, client
}

// TestRegister: the Node gets its zone, pod CIDR, address, capacity and
// Ready condition, and loses the not-ready taint the apiserver gave it.
func TestRegister(t *testing.T) {
	tainted := corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node2"},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule},
			{Key: "example.com/keep", Effect: corev1.TaintEffectNoSchedule},
		}},
	}
	k, client := newKubelet(t, tainted)
	if err := k.register(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, err := client.CoreV1().Nodes().Get(context.Background(), "node2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "example.com/keep" {
		t.Errorf("taints: %+v, want only example.com/keep", n.Spec.Taints)
	}
	if n.Status.Allocatable.Pods().Value() != 110 || len(n.Status.Addresses) == 0 || n.Status.Addresses[0].Address != "198.51.100.2" {
		t.Errorf("status: %+v", n.Status)
	}
	if len(n.Status.Conditions) != 1 || n.Status.Conditions[0].Type != corev1.NodeReady || n.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("conditions: %+v", n.Status.Conditions)
	}
}

// TestRegisterCreates: a new Node carries the zone label and pod CIDR.
func TestRegisterCreates(t *testing.T) {
	k, client := newKubelet(t)
	if err := k.register(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, err := client.CoreV1().Nodes().Get(context.Background(), "node2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels[corev1.LabelTopologyZone] != "zone-b" || n.Spec.PodCIDR != "10.244.2.0/24" || n.Labels[corev1.LabelHostname] != "node2" {
		t.Errorf("node: labels %v, podCIDR %q", n.Labels, n.Spec.PodCIDR)
	}
}

func TestAllocateIP(t *testing.T) {
	k, _ := newKubelet(t)
	a, _ := k.allocateIP()
	b, _ := k.allocateIP()
	if a.String() != "10.244.2.2" || b.String() != "10.244.2.3" {
		t.Fatalf("first addresses: %s %s", a, b)
	}
	k.releaseIP(a)
	if c, _ := k.allocateIP(); c != a {
		t.Errorf("after release got %s, want %s again", c, a)
	}
	n := 2
	for {
		if _, err := k.allocateIP(); err != nil {
			if !strings.Contains(err.Error(), "is full") {
				t.Errorf("error: %v", err)
			}
			break
		}
		n++
	}
	if n != 253 { // .2 to .254
		t.Errorf("%d addresses in a /24, want 253", n)
	}
}

func TestVethName(t *testing.T) {
	a, b := vethName("3f2c1a7e-0000-4000-8000-000000000001"), vethName("3f2c1a7e-0000-4000-8000-000000000002")
	if len(a) > 15 || a == b || a != vethName("3f2c1a7e-0000-4000-8000-000000000001") || !strings.HasPrefix(a, "veth") {
		t.Errorf("vethName: %q %q", a, b)
	}
}

// TestPodStatus: Running with the pod's IP at once; Ready only when every
// container is.
func TestPodStatus(t *testing.T) {
	k, _ := newKubelet(t)
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "u1"}}
	p := newPod(k, obj)
	p.ip = netip.MustParseAddr("10.244.2.7")
	a, b := &container{spec: corev1.Container{Name: "a"}}, &container{spec: corev1.Container{Name: "b"}}
	p.containers = []*container{a, b}
	a.started.Store(true)
	a.ready.Store(true)
	s := p.status(obj)
	if s.Phase != corev1.PodRunning || s.PodIP != "10.244.2.7" || s.HostIP != "198.51.100.2" || readyOf(s) != corev1.ConditionFalse {
		t.Errorf("one container ready: %+v", s)
	}
	b.started.Store(true)
	b.ready.Store(true)
	if s := p.status(obj); readyOf(s) != corev1.ConditionTrue || !s.ContainerStatuses[1].Ready {
		t.Errorf("both ready: %+v", s)
	}
}

func readyOf(s corev1.PodStatus) corev1.ConditionStatus {
	for _, c := range s.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status
		}
	}
	return ""
}

// TestContainerVars: literal values and the downward API's pod fields.
func TestContainerVars(t *testing.T) {
	k, _ := newKubelet(t)
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", UID: "u7"}}
	p := newPod(k, obj)
	p.ip = netip.MustParseAddr("10.244.2.9")
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	c := corev1.Container{Name: "c", Env: []corev1.EnvVar{
		{Name: "VERSION", Value: "v2"},
		{Name: "POD_NAME", ValueFrom: field("metadata.name")},
		{Name: "POD_IP", ValueFrom: field("status.podIP")},
		{Name: "NODE", ValueFrom: field("spec.nodeName")},
		{Name: "SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}},
	}}
	got := p.vars(obj, c)
	want := map[string]string{"VERSION": "v2", "POD_NAME": "web-1", "POD_IP": "10.244.2.9", "NODE": "node2"}
	if len(got) != len(want) {
		t.Errorf("vars = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// TestExitedContainersRestart: a container whose program fails is started
// again after the back-off and counted, unless the policy is Never or the
// pod terminates.
func TestExitedContainersRestart(t *testing.T) {
	k, _ := newKubelet(t)
	runs := 0
	k.images = func(string) (workload.Program, bool) {
		return func(context.Context, workload.Env, func()) error { runs++; return errors.New("boom") }, true
	}
	for _, c := range []struct {
		policy      corev1.RestartPolicy
		terminating bool
		want        int
	}{{corev1.RestartPolicyAlways, false, 1}, {corev1.RestartPolicyOnFailure, false, 1}, {corev1.RestartPolicyNever, false, 0}, {corev1.RestartPolicyAlways, true, 0}} {
		obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "crash", Namespace: "default", UID: "u9"},
			Spec: corev1.PodSpec{RestartPolicy: c.policy, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
		p := newPod(k, obj)
		p.terminating.Store(c.terminating)
		p.containers = []*container{p.startContainer(context.Background(), obj, obj.Spec.Containers[0])}
		<-p.containers[0].exited
		for range 3 {
			p.restartExited(context.Background(), obj)
			time.Sleep(5 * time.Millisecond)
		}
		<-p.containers[0].exited
		s := p.status(obj)
		if got := p.containers[0].restarts; got < c.want || c.want == 0 && got != 0 {
			t.Errorf("%s, terminating %v: %d restarts, want %d", c.policy, c.terminating, got, c.want)
		}
		if s.ContainerStatuses[0].Ready || s.ContainerStatuses[0].State.Waiting == nil || s.ContainerStatuses[0].RestartCount != int32(p.containers[0].restarts) {
			t.Errorf("%s: status %+v", c.policy, s.ContainerStatuses[0])
		}
	}
	if runs < 6 {
		t.Errorf("the program ran %d times", runs)
	}
}

// TestAdoption: a pod with an IP whose namespace exists is taken over with
// that IP, once; without either it is set up anew.
func TestAdoption(t *testing.T) {
	k, _ := newKubelet(t)
	exists := func(name string) bool { return name == "t-pod-default-web" }
	running := &corev1.Pod{Status: corev1.PodStatus{PodIP: "10.244.2.7"}}
	if ip, ok := adoptable(running, "t-pod-default-web", exists); !ok || ip.String() != "10.244.2.7" {
		t.Errorf("running pod with its namespace: %v %v", ip, ok)
	}
	if _, ok := adoptable(running, "t-pod-default-other", exists); ok {
		t.Error("a pod whose namespace is gone was adopted")
	}
	if _, ok := adoptable(&corev1.Pod{}, "t-pod-default-web", exists); ok {
		t.Error("a pod without an IP was adopted")
	}
	ip := netip.MustParseAddr("10.244.2.7")
	if !k.reserveIP(ip) || k.reserveIP(ip) || k.reserveIP(netip.MustParseAddr("10.244.9.9")) {
		t.Error("reserveIP: want the first reservation only, and only inside the pod CIDR")
	}
	if got, _ := k.allocateIP(); got == ip {
		t.Errorf("allocateIP handed out the reserved %s", ip)
	}
}
