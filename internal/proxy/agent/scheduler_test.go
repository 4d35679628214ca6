package agent

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/metrics"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/logtest"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// events records the Events an agent asks for.
type events struct {
	mu   sync.Mutex
	list []string // "reason Kind ns/name uid: note"
}

func (e *events) Warning(_ context.Context, ref v1.ObjectReference, reason, _, note string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, reason+" "+ref.Kind+" "+ref.Namespace+"/"+ref.Name+" "+string(ref.UID)+": "+note)
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.list...)
}

// TestUnsupportedSchedulerReported: a Service choosing a scheduler the
// dataplane cannot express gets one Warning Event (with its UID, so that
// kubectl describe shows it) and one warning in the log while it stays so,
// the gauge counts its ports; choosing one the dataplane can clears it, and
// choosing another unsupported one is reported anew.
func TestUnsupportedSchedulerReported(t *testing.T) {
	rec, ev, m, logs := newRecorder(), &events{}, metrics.New(), logtest.New(0)
	a := start(t, Options{Dataplane: rec, Events: ev, Metrics: m, Log: logs.Logger(), SyncPeriod: 100 * time.Millisecond,
		Plan: plan.Config{Dataplane: plan.Capabilities{Dataplane: "nftables", Schedulers: []string{"rr", "sh"}}}})
	svc, slice := web()
	svc.UID = "uid-web"
	objects.Annotation(plan.AnnotationScheduler, "lc")(svc)
	a.SetService(svc)
	a.SetSlice(slice)
	a.Synced()
	rec.next(t)
	rec.next(t) // a periodic sync: nothing reported again
	const gauge = metrics.SchedulerNotSupportedName + " "
	if got := ev.all(); len(got) != 1 || !strings.HasPrefix(got[0], "SchedulerNotSupported Service default/web uid-web: ") ||
		!strings.Contains(got[0], `scheduler "lc" (annotation svcproxy.io/scheduler) cannot be expressed by the nftables dataplane`) {
		t.Fatalf("events = %q, want one SchedulerNotSupported on default/web", got)
	}
	if lines := logs.Lines(); len(lines) != 1 || !strings.Contains(lines[0], "default/web") {
		t.Fatalf("logs = %q, want one warning naming default/web", lines)
	}
	if got := sample(scrape(t, m), gauge); got != gauge+"1" {
		t.Fatalf("gauge %q, want 1", got)
	}

	svc = svc.DeepCopy()
	svc.Annotations[plan.AnnotationScheduler] = "sh"
	a.SetService(svc)
	waitFor(t, func() bool { return sample(scrape(t, m), gauge) == gauge+"0" })
	svc = svc.DeepCopy()
	svc.Annotations[plan.AnnotationScheduler] = "nq"
	a.SetService(svc)
	waitFor(t, func() bool { return len(ev.all()) == 2 })
	if got := ev.all()[1]; !strings.Contains(got, `"nq"`) {
		t.Fatalf("second event %q, want it about nq", got)
	}
}

// sample returns the line of a metrics page that starts with prefix.
func sample(page, prefix string) string {
	for _, l := range strings.Split(page, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
