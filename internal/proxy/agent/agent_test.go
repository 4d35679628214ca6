package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/health"
	"github.com/svcproxy/svcproxy/internal/proxy/metrics"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/logtest"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// recorder is a dataplane that reports each Sync on a channel and fails
// while fail is set.
type recorder struct {
	mu    sync.Mutex
	fail  error
	syncs chan syncCall
}

type syncCall struct {
	at        time.Time
	full      bool
	keys      []string
	ports     int
	endpoints []string // of every port
}

func newRecorder() *recorder { return &recorder{syncs: make(chan syncCall, 100)} }

func (r *recorder) Sync(_ context.Context, p *plan.Plan, ch plan.Changes) error {
	c := syncCall{at: time.Now(), full: ch.Full, ports: len(p.Ports)}
	for k := range ch.Keys {
		c.keys = append(c.keys, k.String())
	}
	for _, sp := range p.Ports {
		for _, ep := range sp.ClusterEndpoints {
			c.endpoints = append(c.endpoints, ep.String())
		}
	}
	r.mu.Lock()
	err := r.fail // decided before the test hears of the sync
	r.mu.Unlock()
	r.syncs <- c
	return err
}

func (r *recorder) Cleanup(context.Context) error { return nil }

func (r *recorder) setFail(err error) {
	r.mu.Lock()
	r.fail = err
	r.mu.Unlock()
}

// next waits (boundedly) for the next sync.
func (r *recorder) next(t *testing.T) syncCall {
	t.Helper()
	select {
	case c := <-r.syncs:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no sync within 20 s")
		return syncCall{}
	}
}

// none asserts that no sync happens within d.
func (r *recorder) none(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case c := <-r.syncs:
		t.Fatalf("unexpected sync %+v: %s", c, why)
	case <-time.After(d):
	}
}

func start(t *testing.T, opts Options) *Agent {
	t.Helper()
	opts.Families = []plan.Family{plan.IPv4}
	opts.Plan.NodeName = "node1"
	a := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

func web() (*v1.Service, *discovery.EndpointSlice) {
	svc := objects.Service("default", "web", objects.ClusterIP("10.96.0.10"), objects.Port("http", v1.ProtocolTCP, 80, 0))
	slice := objects.Slice("default", "web-1", "web", discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", v1.ProtocolTCP, 8080)},
		objects.Endpoint("10.244.1.2", objects.OnNode("node2")))
	return svc, slice
}

func TestNoSyncBeforeSynced(t *testing.T) {
	rec := newRecorder()
	a := start(t, Options{Dataplane: rec, SyncPeriod: time.Hour})
	svc, slice := web()
	a.SetService(svc)
	a.SetSlice(slice)
	rec.none(t, 300*time.Millisecond, "the source has not reported Synced")
	a.Synced()
	c := rec.next(t)
	if !c.full || c.ports != 1 {
		t.Fatalf("first sync = %+v, want full with 1 port", c)
	}
}

func TestPartialSyncOfChangedPort(t *testing.T) {
	rec := newRecorder()
	a := start(t, Options{Dataplane: rec, SyncPeriod: time.Hour})
	svc, slice := web()
	a.SetService(svc)
	a.SetSlice(slice)
	other := objects.Service("default", "db", objects.ClusterIP("10.96.0.11"), objects.Port("sql", v1.ProtocolTCP, 5432, 0))
	a.SetService(other)
	a.Synced()
	rec.next(t)
	slice = slice.DeepCopy()
	slice.Endpoints = append(slice.Endpoints, objects.Endpoint("10.244.2.2", objects.OnNode("node3")))
	a.SetSlice(slice)
	c := rec.next(t)
	if c.full || len(c.keys) != 1 || !strings.Contains(c.keys[0], "default/web:http") {
		t.Fatalf("sync after a slice change = %+v, want partial with only default/web:http", c)
	}
}

func TestMinSyncPeriodSpacesSyncs(t *testing.T) {
	const minPeriod = 400 * time.Millisecond
	rec := newRecorder()
	a := start(t, Options{Dataplane: rec, MinSyncPeriod: minPeriod, SyncPeriod: time.Hour})
	svc, slice := web()
	a.SetService(svc)
	a.Synced()
	first := rec.next(t)
	burst := time.Now()
	for i := range 5 { // a burst of changes becomes one sync
		s := slice.DeepCopy()
		s.Endpoints[0].Addresses = []string{"10.244.1." + string(rune('2'+i))}
		a.SetSlice(s)
	}
	took := time.Since(burst)
	// Every sync until the last change's waits minSyncPeriod after the one
	// before. The burst takes one sync, or, if a busy machine stretched it
	// over several periods, one per period it spans.
	syncs := []syncCall{first}
	for last := first; len(last.endpoints) != 1 || last.endpoints[0] != "10.244.1.6:8080"; {
		last = rec.next(t)
		syncs = append(syncs, last)
	}
	for i := 1; i < len(syncs); i++ {
		if gap := syncs[i].at.Sub(syncs[i-1].at); gap < minPeriod {
			t.Errorf("syncs %d and %d %v apart, want at least minSyncPeriod %v", i-1, i, gap, minPeriod)
		}
	}
	if n, most := len(syncs)-1, 1+int(took/minPeriod); n > most {
		t.Errorf("a burst of 5 changes over %v took %d syncs, want at most %d", took, n, most)
	}
}

func TestSyncPeriodForcesSync(t *testing.T) {
	rec := newRecorder()
	a := start(t, Options{Dataplane: rec, SyncPeriod: 200 * time.Millisecond})
	a.Synced()
	rec.next(t)
	if c := rec.next(t); c.full || len(c.keys) != 0 {
		t.Fatalf("periodic sync = %+v, want partial with nothing changed", c)
	}
}

func TestFailedSyncIsRetriedFull(t *testing.T) {
	rec := newRecorder()
	rec.setFail(errors.New("kernel said no"))
	a := start(t, Options{Dataplane: rec, SyncPeriod: time.Hour})
	svc, slice := web()
	a.SetService(svc)
	a.Synced()
	rec.next(t)
	rec.setFail(nil)
	a.SetSlice(slice)
	if c := rec.next(t); !c.full {
		t.Fatalf("sync after a failure = %+v, want full", c)
	}
	// The status is recorded after the dataplane's Sync returns.
	waitFor(t, func() bool { return a.Status().Syncs == 2 })
	if st := a.Status(); st.Failures != 1 || st.Err != nil {
		t.Fatalf("status = %+v, want one failure and a clean last sync", st)
	}
}

func TestNetworkProgrammingLatencyMetric(t *testing.T) {
	rec := newRecorder()
	m := metrics.New()
	a := start(t, Options{Dataplane: rec, Metrics: m, SyncPeriod: time.Hour})
	svc, slice := web()
	slice.Annotations = map[string]string{AnnotationTriggerTime: time.Now().Add(-2 * time.Second).Format(time.RFC3339Nano)}
	a.SetService(svc)
	a.SetSlice(slice)
	a.Synced()
	rec.next(t)
	const want = `kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"} 1`
	waitFor(t, func() bool { return strings.Contains(scrape(t, m), want) })
	// Observed from the trigger two seconds ago: not in the 1 s bucket.
	if body := scrape(t, m); !strings.Contains(body, `network_programming_duration_seconds_bucket{ip_family="IPv4",le="1"} 0`) {
		t.Fatalf("the observation ignored the trigger time:\n%s", grep(body, "network_programming"))
	}
}

func TestDeletedNodeFailsHealthzNotLivez(t *testing.T) {
	rec := newRecorder()
	h := health.NewProxyHealth([]plan.Family{plan.IPv4}, time.Minute, nil)
	a := start(t, Options{Dataplane: rec, Health: h, SyncPeriod: time.Hour})
	a.SetNode(objects.Node("node1", "zone-a"))
	a.Synced()
	rec.next(t)
	if code := get(t, h.Handler(), "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d with the Node present, want 200", code)
	}
	a.SetNode(nil)
	if code := get(t, h.Handler(), "/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz = %d after the Node was deleted, want 503", code)
	}
	if code := get(t, h.Handler(), "/livez"); code != http.StatusOK {
		t.Fatalf("/livez = %d after the Node was deleted, want 200", code)
	}
}

func TestPrimaryNodePortAddressesFollowNode(t *testing.T) {
	rec := newRecorder()
	a := start(t, Options{Dataplane: rec, PrimaryNodePorts: true, SyncPeriod: time.Hour})
	node := objects.Node("node1", "zone-a")
	node.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "192.168.1.7"}, {Type: v1.NodeHostName, Address: "node1"}}
	a.SetNode(node)
	a.Synced()
	rec.next(t)
	a.mu.Lock()
	defer a.mu.Unlock()
	np := a.current.NodePorts(plan.IPv4)
	if np.AnyLocal || len(a.current.Config.NodePortAddresses) != 1 || a.current.Config.NodePortAddresses[0].String() != "192.168.1.7/32" {
		t.Fatalf("NodePort IPs = %v (any %v), want only the InternalIP", np.IPs, np.AnyLocal)
	}
}

func get(t *testing.T, h http.Handler, path string) int {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w.Code
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	metrics.Handler(m, "nftables", nil, nil).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	return w.Body.String()
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("condition not met within 20 s")
}

func TestNodeCIDRDetectLocalFollowsPodCIDRs(t *testing.T) {
	rec := newRecorder()
	a := start(t, Options{Dataplane: rec, LocalFromPodCIDRs: true, SyncPeriod: time.Hour})
	a.Synced()
	rec.none(t, 300*time.Millisecond, "the first sync waits for the Node")
	node := objects.Node("node1", "zone-a")
	node.Spec.PodCIDRs = []string{"10.244.1.0/24", "fd00:10:244:1::/64"}
	a.SetNode(node)
	if c := rec.next(t); !c.full {
		t.Fatalf("first sync = %+v, want full", c)
	}
	a.mu.Lock()
	got := fmt.Sprint(a.current.Config.ClusterCIDRs)
	a.mu.Unlock()
	if got != "[10.244.1.0/24 fd00:10:244:1::/64]" {
		t.Fatalf("pod network = %s, want the Node's podCIDRs", got)
	}
}

func TestInvalidObjectsAreLoggedOnce(t *testing.T) {
	rec := newRecorder()
	logs := logtest.New(0)
	a := start(t, Options{Dataplane: rec, SyncPeriod: 100 * time.Millisecond, Log: logs.Logger()})
	bad := objects.Service("default", "bad", objects.ClusterIP("10.96.0.300"), objects.Port("http", v1.ProtocolTCP, 80, 0))
	a.SetService(bad)
	a.Synced()
	rec.next(t)
	rec.next(t) // a periodic sync: the error is not logged again
	if lines := logs.Lines(); len(lines) != 1 || !strings.Contains(lines[0], "default/bad") || !strings.Contains(lines[0], "clusterIP") {
		t.Fatalf("logs = %q, want one line naming default/bad and its clusterIP", lines)
	}
}

// TestSyncLog: at -v=4 each sync logs whether it was full or partial, the
// service ports it changed (removed ones marked) and how long it took; at
// the default verbosity a sync that works logs nothing, one that fails
// logs the error.
func TestSyncLog(t *testing.T) {
	for _, v := range []int{0, 4} {
		logs := logtest.New(v)
		rec := newRecorder()
		a := start(t, Options{Dataplane: rec, SyncPeriod: time.Hour, Log: logs.Logger()})
		svc, slice := web()
		a.SetService(svc)
		a.SetSlice(slice)
		a.Synced()
		rec.next(t)
		db := objects.Service("default", "db", objects.ClusterIP("10.96.0.11"), objects.Port("sql", v1.ProtocolTCP, 5432, 0))
		a.SetService(db)
		rec.next(t)
		a.DeleteService(svc)
		rec.next(t)
		rec.setFail(errors.New("kernel said no"))
		a.SetService(svc)
		rec.next(t)
		waitFor(t, func() bool { return logs.Count("Sync failed", "kernel said no") == 1 })
		if v == 0 {
			if lines := logs.Lines(); len(lines) != 1 {
				t.Errorf("-v=0 logged %q, want only the failure", lines)
			}
			continue
		}
		waitFor(t, func() bool { return logs.Count("Synced") == 3 })
		lines := logs.Lines()
		for i, want := range [][]string{
			{"Synced sync=full changed=1 servicePorts=1 took=", "ports=[default/web:http/TCP IPv4]"},
			{"Synced sync=partial changed=1 servicePorts=2 took=", "ports=[default/db:sql/TCP IPv4]"},
			{"Synced sync=partial changed=1 servicePorts=1 took=", "ports=[default/web:http/TCP IPv4 (removed)]"},
		} {
			if !strings.Contains(lines[i], want[0]) || !strings.Contains(lines[i], want[1]) {
				t.Errorf("-v=4 line %d = %q, want %q", i, lines[i], want)
			}
		}
	}
}

// gate is a dataplane whose Syncs say they began and wait for release.
type gate struct{ entered, release chan struct{} }

func (g gate) Sync(context.Context, *plan.Plan, plan.Changes) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
	return nil
}

func (g gate) Cleanup(context.Context) error { return nil }

// TestStatusSaysWhileSyncing: the plan WithPlan shows is marked in
// progress until the dataplane has applied it, so that a status reader
// does not take it for what the kernel holds.
func TestStatusSaysWhileSyncing(t *testing.T) {
	g := gate{entered: make(chan struct{}, 1), release: make(chan struct{})}
	a := start(t, Options{Dataplane: g, SyncPeriod: time.Hour})
	svc, _ := web()
	a.SetService(svc)
	a.Synced()
	<-g.entered
	a.WithPlan(func(p *plan.Plan, st Status) {
		if p == nil || len(p.Ports) != 1 || !st.InProgress {
			t.Errorf("during the first sync: plan %v, status %+v, want the plan with InProgress", p, st)
		}
	})
	close(g.release)
	waitFor(t, func() bool { st := a.Status(); return st.Syncs == 1 && !st.InProgress })
}

// rechecker is a recorder that asks, once, for another sync after its
// first: as the IPVS dataplane does while real servers drain.
type rechecker struct {
	*recorder
	mu    sync.Mutex
	after time.Duration
}

func (r *rechecker) RecheckAfter() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.after
	r.after = 0
	return d
}

func TestRecheckAfter(t *testing.T) {
	rec := &rechecker{recorder: newRecorder(), after: 100 * time.Millisecond}
	a := start(t, Options{Dataplane: rec, SyncPeriod: time.Hour})
	svc, slice := web()
	a.SetService(svc)
	a.SetSlice(slice)
	a.Synced()
	first := rec.next(t)
	second := rec.next(t) // nothing changed: only the recheck asks for it
	if second.full || len(second.keys) != 0 {
		t.Errorf("recheck sync = %+v, want a partial sync without changes", second)
	}
	if gap := second.at.Sub(first.at); gap < 100*time.Millisecond {
		t.Errorf("recheck came %v after the sync, want at least the 100ms asked", gap)
	}
	rec.none(t, 300*time.Millisecond, "no recheck asked any more")
}
