package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/svcproxy/svcproxy/internal/proxy/config"
)

// objects decodes every document of every manifest, strictly by type.
func objects(t *testing.T) []runtime.Object {
	t.Helper()
	files, _ := filepath.Glob("*.yaml")
	var out []runtime.Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(data), "\n---\n") {
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i+1, err)
			}
			out = append(out, obj)
		}
	}
	return out
}

func find[T runtime.Object](t *testing.T) T {
	t.Helper()
	for _, o := range objects(t) {
		if v, ok := o.(T); ok {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T in deploy/", zero)
	return zero
}

func TestRBACIsLeastPrivilege(t *testing.T) {
	role := find[*rbacv1.ClusterRole](t)
	want := map[string][]string{ // group/resource -> verbs
		"/services":                       {"get", "list", "watch"},
		"/nodes":                          {"get", "list", "watch"},
		"discovery.k8s.io/endpointslices": {"get", "list", "watch"},
		"/events":                         {"create", "patch"},
		"events.k8s.io/events":            {"create", "patch"},
	}
	got := map[string][]string{}
	for _, r := range role.Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				got[g+"/"+res] = append(got[g+"/"+res], r.Verbs...)
			}
		}
	}
	for k, verbs := range got {
		slices.Sort(verbs)
		w := slices.Clone(want[k])
		slices.Sort(w)
		if !slices.Equal(verbs, w) {
			t.Errorf("%s: verbs %v, want %v", k, verbs, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("rules grant %v, want exactly %v", got, want)
	}
	binding := find[*rbacv1.ClusterRoleBinding](t)
	sa := find[*v1.ServiceAccount](t)
	if binding.RoleRef.Name != role.Name || binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("binding %+v does not tie role %s to %s/%s", binding, role.Name, sa.Namespace, sa.Name)
	}
}

func TestDaemonSetRunsUnprivileged(t *testing.T) {
	ds := find[*appsv1.DaemonSet](t)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.ServiceAccountName != find[*v1.ServiceAccount](t).Name {
		t.Errorf("want hostNetwork and the svcproxy ServiceAccount, got hostNetwork=%v sa=%q", spec.HostNetwork, spec.ServiceAccountName)
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc.Privileged == nil || *sc.Privileged || !slices.Equal(sc.Capabilities.Add, []v1.Capability{"NET_ADMIN", "NET_RAW"}) || !slices.Equal(sc.Capabilities.Drop, []v1.Capability{"ALL"}) {
		t.Errorf("proxy container security context %+v, want unprivileged with only NET_ADMIN and NET_RAW", sc)
	}
	probes := map[string]*v1.Probe{"/livez": c.LivenessProbe, "/healthz": c.ReadinessProbe}
	for path, p := range probes {
		if p == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.IntValue() != config.HealthzPort {
			t.Errorf("probe for %s = %+v, want an HTTP GET on port %d", path, p, config.HealthzPort)
		}
	}
	if !slices.ContainsFunc(c.Env, func(e v1.EnvVar) bool {
		return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
	}) {
		t.Error("GOMEMLIMIT does not follow limits.memory")
	}
}

// TestDaemonSetCommandLinesParse runs the containers' arguments, with the
// ConfigMap's config file, through svcproxy's own parser.
func TestDaemonSetCommandLinesParse(t *testing.T) {
	cm := find[*v1.ConfigMap](t)
	dir := t.TempDir()
	for name, content := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ds := find[*appsv1.DaemonSet](t)
	for _, c := range append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...) {
		var args []string
		for _, a := range c.Command[1:] {
			a = strings.ReplaceAll(a, "/etc/svcproxy", dir)
			args = append(args, strings.ReplaceAll(a, "$(NODE_NAME)", "node-a"))
		}
		opts, err := config.Parse(args)
		if err != nil {
			t.Fatalf("container %s: %v", c.Name, err)
		}
		if opts.Proxy.Mode != config.ModeNFTables || opts.Proxy.MinSyncPeriod.String() != "1s" {
			t.Errorf("container %s: settings %+v, want nftables with minSyncPeriod 1s", c.Name, opts.Proxy)
		}
	}
}
