package twotier_test

import (
	"io/fs"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	twotier "github.com/svcproxy/svcproxy/examples/two-tier"
	"github.com/svcproxy/svcproxy/internal/tools/lab/workload"
)

// The example's files, each checked below; a file added without a check
// fails TestEveryFileIsChecked.
const (
	backendDeployment    = "backend-deployment.yaml"
	backendService       = "backend-service.yaml"
	frontendDeployment   = "frontend-deployment.yaml"
	frontendService      = "frontend-service.yaml"
	frontendLoadBalancer = "frontend-loadbalancer.yaml"
	frontendLocal        = "frontend-local.yaml"
)

func TestEveryFileIsChecked(t *testing.T) {
	files, err := fs.Glob(twotier.Files, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{backendDeployment, backendService, frontendDeployment, frontendService, frontendLoadBalancer, frontendLocal}
	slices.Sort(want)
	if !slices.Equal(files, want) {
		t.Errorf("files %v, want %v", files, want)
	}
}

// decode reads file strictly: unknown or duplicate fields fail.
func decode[T any](t *testing.T, file string) *T {
	t.Helper()
	data, err := fs.ReadFile(twotier.Files, file)
	if err != nil {
		t.Fatal(err)
	}
	obj := new(T)
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return obj
}

func deployment(t *testing.T, file string) *appsv1.Deployment {
	t.Helper()
	d := decode[appsv1.Deployment](t, file)
	checkObject(t, file, d.TypeMeta, d.ObjectMeta, "apps/v1 Deployment")
	return d
}

func service(t *testing.T, file string) *corev1.Service {
	t.Helper()
	s := decode[corev1.Service](t, file)
	checkObject(t, file, s.TypeMeta, s.ObjectMeta, "v1 Service")
	return s
}

func checkObject(t *testing.T, file string, tm metav1.TypeMeta, om metav1.ObjectMeta, want string) {
	t.Helper()
	if got := tm.APIVersion + " " + tm.Kind; got != want {
		t.Errorf("%s: %s, want %s", file, got, want)
	}
	if om.Namespace != "" {
		t.Errorf("%s: namespace %q, want the default one", file, om.Namespace)
	}
}

func TestDeployments(t *testing.T) {
	for _, tc := range []struct {
		file, name, app string
		port            int32
	}{
		{backendDeployment, "backend-deployment", "backend", 3000},
		{frontendDeployment, "frontend-deployment", "frontend", 8080},
	} {
		t.Run(tc.file, func(t *testing.T) {
			d := deployment(t, tc.file)
			if d.Name != tc.name || d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
				t.Errorf("%s with replicas %v, want %s with 3", d.Name, d.Spec.Replicas, tc.name)
			}
			if l := d.Spec.Template.Labels; l["app"] != tc.app || !selects(t, d.Spec.Selector, l) {
				t.Errorf("template labels %v, selector %v: want app=%s, selected", l, d.Spec.Selector, tc.app)
			}
			checkStrategy(t, d)
			checkContainer(t, d, tc.port)
		})
	}
}

func selects(t *testing.T, selector *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

// checkStrategy wants rolling updates that never lose a ready pod, and pods
// that go within 5 s.
func checkStrategy(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	s := d.Spec.Strategy
	if s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxSurge.String() != "1" || s.RollingUpdate.MaxUnavailable.String() != "0" {
		t.Errorf("strategy %+v, want RollingUpdate maxSurge 1 maxUnavailable 0", s)
	}
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != 5 {
		t.Errorf("terminationGracePeriodSeconds %v, want 5", g)
	}
}

// checkContainer wants one jobs-api container with port "http" and a
// readiness probe on its /healthz.
func checkContainer(t *testing.T, d *appsv1.Deployment, port int32) {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	c := cs[0]
	if run, known := workload.Images("")(c.Image); !known || !sameProgram(run, workload.JobsAPI) {
		t.Errorf("image %q is not the lab's jobs API", c.Image)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != port || c.Ports[0].Name != "http" {
		t.Errorf("ports %+v, want http %d", c.Ports, port)
	}
	p := c.ReadinessProbe
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || !targets(p.HTTPGet.Port, c) || p.PeriodSeconds != 1 {
		t.Errorf("readiness probe %+v, want GET /healthz on port %d every second", p, port)
	}
}

func sameProgram(a, b workload.Program) bool {
	return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}

// targets reports whether port names or numbers one of c's ports.
func targets(port intstr.IntOrString, c corev1.Container) bool {
	return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
		if port.Type == intstr.String {
			return port.StrVal == p.Name
		}
		return port.IntVal == p.ContainerPort
	})
}

func TestBackendService(t *testing.T) {
	s := service(t, backendService)
	d := deployment(t, backendDeployment)
	if s.Name != "backend-service" || s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("%s of type %q, want ClusterIP backend-service", s.Name, s.Spec.Type)
	}
	checkPort(t, s, "backend", 3000, d)

	// The frontend finds the backend by this Service's name and port.
	f := deployment(t, frontendDeployment)
	want := net.JoinHostPort(s.Name, strconv.Itoa(int(s.Spec.Ports[0].Port)))
	if got := backendURLHost(t, f); got != want {
		t.Errorf("frontend's BACKEND_URL names %s, want %s", got, want)
	}
}

func backendURLHost(t *testing.T, d *appsv1.Deployment) string {
	t.Helper()
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "BACKEND_URL" {
			u, err := url.Parse(e.Value)
			if err != nil {
				t.Fatal(err)
			}
			return u.Host
		}
	}
	t.Fatal("frontend has no BACKEND_URL")
	return ""
}

func TestFrontendServices(t *testing.T) {
	d := deployment(t, frontendDeployment)
	for _, tc := range []struct {
		file   string
		typ    corev1.ServiceType
		policy corev1.ServiceExternalTrafficPolicy
	}{
		{frontendService, corev1.ServiceTypeNodePort, ""},
		{frontendLoadBalancer, corev1.ServiceTypeLoadBalancer, ""},
		{frontendLocal, corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyLocal},
	} {
		t.Run(tc.file, func(t *testing.T) {
			s := service(t, tc.file)
			// One name, so that applying each file changes the same Service.
			if s.Name != "frontend-service" || s.Spec.Type != tc.typ || s.Spec.ExternalTrafficPolicy != tc.policy {
				t.Errorf("%s type %q policy %q, want frontend-service %q %q",
					s.Name, s.Spec.Type, s.Spec.ExternalTrafficPolicy, tc.typ, tc.policy)
			}
			checkPort(t, s, "frontend", 80, d)
			if np := s.Spec.Ports[0].NodePort; np != 0 {
				t.Errorf("nodePort %d, want it left to the API", np)
			}
		})
	}
}

// checkPort wants one TCP port, named and numbered, whose target is a port
// of the pods s selects from d.
func checkPort(t *testing.T, s *corev1.Service, name string, port int32, d *appsv1.Deployment) {
	t.Helper()
	selector := &metav1.LabelSelector{MatchLabels: s.Spec.Selector}
	if !selects(t, selector, d.Spec.Template.Labels) {
		t.Errorf("selector %v does not select %s's pods %v", s.Spec.Selector, d.Name, d.Spec.Template.Labels)
	}
	if len(s.Spec.Ports) != 1 {
		t.Fatalf("%d ports, want 1", len(s.Spec.Ports))
	}
	p := s.Spec.Ports[0]
	if p.Name != name || p.Port != port || p.Protocol != corev1.ProtocolTCP {
		t.Errorf("port %+v, want %s %d/TCP", p, name, port)
	}
	if !targets(p.TargetPort, d.Spec.Template.Spec.Containers[0]) {
		t.Errorf("targetPort %s is not a port of %s", p.TargetPort.String(), d.Name)
	}
}
