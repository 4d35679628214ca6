package proxy

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	kevents "k8s.io/client-go/tools/events"
)

// events records, best effort, the events kube-proxy records about its
// Node (referred to by name, as kube-proxy does, without looking the Node
// up). Without a client (standalone) it records nothing.
type events struct {
	client   kubernetes.Interface
	nodeName string
	log      logr.Logger
}

// started is the Normal "Starting" event kube-proxy records when it starts.
func (e events) started(ctx context.Context) {
	e.record(ctx, v1.EventTypeNormal, "Starting", "StartServiceProxy", "Starting svcproxy.")
}

// warning records a Warning event, such as a server that cannot listen.
func (e events) warning(ctx context.Context, reason, action, note string) {
	e.record(ctx, v1.EventTypeWarning, reason, action, note)
}

func (e events) record(ctx context.Context, typ, reason, action, note string) {
	if e.client == nil {
		return
	}
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", e.nodeName, time.Now().UnixNano()), Namespace: metav1.NamespaceDefault},
		EventTime:           metav1.NowMicro(),
		ReportingController: "svcproxy",
		ReportingInstance:   "svcproxy-" + e.nodeName,
		Action:              action,
		Reason:              reason,
		Note:                note,
		Type:                typ,
		Regarding:           v1.ObjectReference{Kind: "Node", Name: e.nodeName, UID: types.UID(e.nodeName)},
	}
	if _, err := e.client.EventsV1().Events(ev.Namespace).Create(context.WithoutCancel(ctx), ev, metav1.CreateOptions{}); err != nil {
		e.log.Error(err, "Recording an event", "reason", reason)
	}
}

// serviceEvents records Events about Services through client-go's events
// broadcaster, as kube-proxy records its own: in the background, repeated
// ones folded into a series. Without a client it records nothing.
type serviceEvents struct {
	recorder kevents.EventRecorder
	nodeName string
}

// newServiceEvents starts the broadcaster; stop ends it.
func newServiceEvents(ctx context.Context, client kubernetes.Interface, nodeName string) (serviceEvents, func()) {
	if client == nil {
		return serviceEvents{}, func() {}
	}
	b := kevents.NewBroadcaster(&kevents.EventSinkImpl{Interface: client.EventsV1()})
	b.StartRecordingToSink(ctx.Done())
	return serviceEvents{recorder: b.NewRecorder(scheme.Scheme, "svcproxy"), nodeName: nodeName}, b.Shutdown
}

// Warning implements agent.Recorder; the note says which node saw it.
func (e serviceEvents) Warning(_ context.Context, regarding v1.ObjectReference, reason, action, note string) {
	if e.recorder == nil {
		return
	}
	e.recorder.Eventf(&regarding, nil, v1.EventTypeWarning, reason, action, "%s (node %s)", note, e.nodeName)
}
