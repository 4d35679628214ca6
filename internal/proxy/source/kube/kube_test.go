package kube

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/proxy/source"
)

func TestSlimKeepsOnlyWhatTheProxyReads(t *testing.T) {
	meta := metav1.ObjectMeta{
		Name:          "web",
		Labels:        map[string]string{"app": "web"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		Annotations: map[string]string{
			"kubectl.kubernetes.io/last-applied-configuration": `{"big":"json"}`,
			v1.EndpointsLastChangeTriggerTime:                  "2026-12-02T08:00:00Z",
			plan.AnnotationScheduler:                           "sh",
		},
	}
	slice := &discovery.EndpointSlice{ObjectMeta: *meta.DeepCopy()}
	svc := &v1.Service{ObjectMeta: *meta.DeepCopy()}
	node := &v1.Node{ObjectMeta: *meta.DeepCopy(), Status: v1.NodeStatus{Images: []v1.ContainerImage{{Names: []string{"x"}}}}}
	for _, obj := range []metav1.Object{slice, svc, node} {
		if _, err := slim(obj); err != nil {
			t.Fatal(err)
		}
		if obj.GetManagedFields() != nil || len(obj.GetAnnotations()) != 2 || obj.GetLabels()["app"] != "web" {
			t.Errorf("%T after slim: managedFields %v, annotations %v, labels %v", obj, obj.GetManagedFields(), obj.GetAnnotations(), obj.GetLabels())
		}
		if got := obj.GetAnnotations()[v1.EndpointsLastChangeTriggerTime]; got != "2026-12-02T08:00:00Z" {
			t.Errorf("%T lost the trigger time: %q", obj, got)
		}
		if got := obj.GetAnnotations()[plan.AnnotationScheduler]; got != "sh" {
			t.Errorf("%T lost the scheduler: %q", obj, got)
		}
	}
	if node.Status.Images != nil {
		t.Error("the Node kept its image list")
	}
}

func TestSelectorLeavesOutOtherProxiesAndHeadless(t *testing.T) {
	sel := selector()
	for _, tt := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"app": "web"}, true},
		{map[string]string{source.LabelServiceProxyName: "other"}, false},
		{map[string]string{source.LabelHeadless: ""}, false},
	} {
		if got := sel.Matches(labels.Set(tt.labels)); got != tt.want {
			t.Errorf("selector %q matches %v = %v, want %v", sel, tt.labels, got, tt.want)
		}
	}
}
