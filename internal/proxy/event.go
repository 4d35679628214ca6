package proxy

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// announceStart records the event kube-proxy records when it starts: a
// Normal "Starting" event about this Node (referred to by name, as
// kube-proxy does, without looking the Node up). Best effort.
func announceStart(ctx context.Context, client kubernetes.Interface, nodeName string, logf func(string, ...any)) {
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", nodeName, time.Now().UnixNano()), Namespace: metav1.NamespaceDefault},
		EventTime:           metav1.NowMicro(),
		ReportingController: "svcproxy",
		ReportingInstance:   "svcproxy-" + nodeName,
		Action:              "StartServiceProxy",
		Reason:              "Starting",
		Note:                "Starting svcproxy.",
		Type:                v1.EventTypeNormal,
		Regarding:           v1.ObjectReference{Kind: "Node", Name: nodeName, UID: types.UID(nodeName)},
	}
	if _, err := client.EventsV1().Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		logf("recording the Starting event: %v", err)
	}
}
