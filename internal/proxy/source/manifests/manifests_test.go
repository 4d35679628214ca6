package manifests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/logtest"
)

// recorder is a source.Sink that records its calls, and a logger's lines.
type recorder struct {
	mu       sync.Mutex
	events   []string
	services map[string]*v1.Service
	logs     *logtest.Recorder
}

func newRecorder() *recorder {
	return &recorder{services: map[string]*v1.Service{}, logs: logtest.New(0)}
}

func (r *recorder) record(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) SetService(s *v1.Service) {
	r.record("SetService " + s.Namespace + "/" + s.Name)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.services[s.Namespace+"/"+s.Name] = s
}
func (r *recorder) DeleteService(s *v1.Service) {
	r.record("DeleteService " + s.Namespace + "/" + s.Name)
}
func (r *recorder) SetSlice(s *discovery.EndpointSlice) {
	r.record("SetSlice " + s.Namespace + "/" + s.Name)
}
func (r *recorder) DeleteSlice(s *discovery.EndpointSlice) {
	r.record("DeleteSlice " + s.Namespace + "/" + s.Name)
}
func (r *recorder) SetNode(*v1.Node) { r.record("SetNode") }
func (r *recorder) Synced()          { r.record("Synced") }

func (r *recorder) snapshot() (events, logs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events), r.logs.Lines()
}

// eventsSince returns the events from index n on.
func (r *recorder) eventsSince(n int) []string {
	e, _ := r.snapshot()
	return e[min(n, len(e)):]
}

func (r *recorder) port(name string) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.services[name]; s != nil && len(s.Spec.Ports) > 0 {
		return s.Spec.Ports[0].Port
	}
	return 0
}

// logged counts the log lines holding every one of subs.
func (r *recorder) logged(subs ...string) int { return r.logs.Count(subs...) }

// waitFor polls cond for at most 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// start runs the source on dir until the test ends.
func start(t *testing.T, dir string) *recorder {
	t.Helper()
	r := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Dir: dir, Interval: 20 * time.Millisecond, Log: r.logs.Logger()}, r) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	waitFor(t, "Synced", func() bool { e, _ := r.snapshot(); return slices.Contains(e, "Synced") })
	return r
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// barrier writes a marker Service and waits until it is set: every scan
// before it has been delivered in full.
func barrier(t *testing.T, r *recorder, dir string, n int) {
	t.Helper()
	name := fmt.Sprintf("marker%d", n)
	write(t, dir, name+".yaml", service(name, 80))
	waitFor(t, name, func() bool { e, _ := r.snapshot(); return slices.Contains(e, "SetService default/"+name) })
}

func service(name string, port int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
spec:
  clusterIP: 10.96.0.10
  ports:
  - port: %d
    protocol: TCP
`, name, port)
}

func slice(name, service, ip string) string {
	return fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %s
  labels:
    kubernetes.io/service-name: %s
addressType: IPv4
endpoints:
- addresses: [%q]
ports:
- port: 8080
`, name, service, ip)
}

// webFile is a Service and its slice in one file, as people write them.
func webFile(port int, ip string) string {
	return "# web\n---\n" + service("web", port) + "---\n" + slice("web-1", "web", ip)
}

func TestInitialScan(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", webFile(80, "10.0.0.1"))
	write(t, dir, ".hidden.yaml", "garbage: [")
	write(t, dir, "web.yaml~", "garbage: [")
	write(t, dir, ".web.yaml.swp", "garbage: [")
	write(t, dir, "notes.txt", "garbage: [")
	r := start(t, dir)
	barrier(t, r, dir, 1)
	events, logs := r.snapshot()
	want := []string{"SetService default/web", "SetSlice default/web-1", "Synced", "SetService default/marker1"}
	if !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}
	if len(logs) != 0 {
		t.Errorf("logs %q, want none", logs)
	}
}

func TestChangeSetsOnlyTheChangedObject(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", webFile(80, "10.0.0.1"))
	r := start(t, dir)
	n := len(r.eventsSince(0))
	// Same size, likely the same mtime tick: the content hash must see it.
	write(t, dir, "web.yaml", webFile(81, "10.0.0.1"))
	waitFor(t, "port 81", func() bool { return r.port("default/web") == 81 })
	barrier(t, r, dir, 1)
	want := []string{"SetService default/web", "SetService default/marker1"}
	if got := r.eventsSince(n); !slices.Equal(got, want) {
		t.Errorf("events after the change %q, want %q", got, want)
	}
}

func TestRemoveDeletes(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", webFile(80, "10.0.0.1"))
	write(t, dir, "other.yml", service("other", 53))
	r := start(t, dir)
	n := len(r.eventsSince(0))
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	want := []string{"DeleteSlice default/web-1", "DeleteService default/web"}
	waitFor(t, "deletes", func() bool { return slices.Equal(r.eventsSince(n), want) })
	barrier(t, r, dir, 1)
	if got := r.eventsSince(n); !slices.Equal(got, append(want, "SetService default/marker1")) {
		t.Errorf("events %q", got)
	}
}

func TestBadFileKeepsLastGoodState(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string // substrings of one log line
	}{
		{"syntax", "# web\n---\n" + service("web", 80) + "---\nkind: [\n", []string{
			"web.yaml: document 2: yaml: line 13:"}},
		{"unknown field", strings.Replace(webFile(80, "10.0.0.1"), "protocol:", "protocl:", 1), []string{
			"web.yaml: document 1 (Service default/web): spec.ports[0].protocl: unknown field"}},
		{"port range", webFile(70000, "10.0.0.1"), []string{
			"web.yaml: document 1 (Service default/web): spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535"}},
		{"bad ip", webFile(80, "10.0.0.300"), []string{
			"web.yaml: document 2 (EndpointSlice default/web-1): endpoints[0].addresses[0]: Invalid value: \"10.0.0.300\": must be a valid IP address"}},
		{"family", webFile(80, "fd00::1"), []string{
			"web.yaml: document 2 (EndpointSlice default/web-1): endpoints[0].addresses[0]: Invalid value: \"fd00::1\": not an IPv4 address"}},
		{"kind", webFile(80, "10.0.0.1") + "---\napiVersion: apps/v1\nkind: Deployment\n", []string{
			"web.yaml: document 3 (apps/v1 Deployment): kind apps/v1 Deployment is not supported"}},
		{"label", strings.Replace(webFile(80, "10.0.0.1"), "kubernetes.io/service-name: web", "app: web", 1), []string{
			`web.yaml: document 2 (EndpointSlice default/web-1): metadata.labels[kubernetes.io/service-name]: Required value`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "web.yaml", webFile(80, "10.0.0.1"))
			r := start(t, dir)
			n := len(r.eventsSince(0))
			write(t, dir, "web.yaml", tc.content)
			waitFor(t, "the error", func() bool { return r.logged(tc.want...) > 0 })
			barrier(t, r, dir, 1)
			if got := r.eventsSince(n); !slices.Equal(got, []string{"SetService default/marker1"}) {
				t.Errorf("events after the bad edit %q, want only the marker", got)
			}
			if c := r.logged(tc.want...); c != 1 {
				t.Errorf("error logged %d times, want once", c)
			}
			write(t, dir, "web.yaml", webFile(82, "10.0.0.1"))
			waitFor(t, "the fix", func() bool { return r.port("default/web") == 82 })
			waitFor(t, "recovery log", func() bool { return r.logged("valid again", "file=web.yaml") == 1 })
		})
	}
}

func TestDuplicateAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", service("web", 80))
	write(t, dir, "b.yaml", service("other", 53)+"---\n"+service("web", 81))
	r := start(t, dir)
	want := []string{"b.yaml: document 2 (Service default/web): duplicate", "also defined in a.yaml"}
	waitFor(t, "the duplicate error", func() bool { return r.logged(want...) == 1 })
	if events, _ := r.snapshot(); !slices.Equal(events, []string{"SetService default/web", "Synced"}) {
		t.Errorf("events %q: b.yaml should not be applied", events)
	}
	if p := r.port("default/web"); p != 80 {
		t.Errorf("port %d, want a.yaml's 80", p)
	}
}

func TestIgnoredLabels(t *testing.T) {
	dir := t.TempDir()
	headless := strings.Replace(service("headless", 80), "metadata:\n", "metadata:\n  labels:\n    service.kubernetes.io/headless: \"\"\n", 1)
	other := strings.Replace(service("other", 80), "metadata:\n", "metadata:\n  labels:\n    service.kubernetes.io/service-proxy-name: foo\n", 1)
	write(t, dir, "ignored.yaml", headless+"---\n"+other)
	r := start(t, dir)
	barrier(t, r, dir, 1)
	if events, logs := r.snapshot(); !slices.Equal(events, []string{"Synced", "SetService default/marker1"}) || len(logs) > 0 {
		t.Errorf("events %q logs %q, want the labelled Services ignored", events, logs)
	}
}

func TestRunErrorsAndCancel(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "file.yaml", service("web", 80))
	for _, d := range []string{filepath.Join(dir, "missing"), filepath.Join(dir, "file.yaml")} {
		if err := Run(context.Background(), Options{Dir: d}, newRecorder()); err == nil {
			t.Errorf("Run(%s): no error", d)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	r := newRecorder()
	go func() { done <- Run(ctx, Options{Dir: dir, Interval: time.Hour, Log: r.logs.Logger()}, r) }()
	waitFor(t, "Synced", func() bool { e, _ := r.snapshot(); return slices.Contains(e, "Synced") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestMoveBetweenFilesIsNoConflict drives a watcher by hand: Run would make
// the order of the two writes and the scans racy.
func TestMoveBetweenFilesIsNoConflict(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", service("web", 80)+"---\n"+service("x", 80))
	write(t, dir, "b.yaml", service("other", 80))
	r := newRecorder()
	w := newWatcher(dir, r.logs.Logger(), r)
	w.scan()
	write(t, dir, "a.yaml", service("web", 80)+"# moved\n")
	write(t, dir, "b.yaml", service("other", 80)+"---\n"+service("x", 80))
	w.scan()
	events, logs := r.snapshot()
	want := []string{"SetService default/other", "SetService default/web", "SetService default/x"}
	if !slices.Equal(events, want) || len(logs) > 0 {
		t.Errorf("events %q logs %q, want %q and no logs", events, logs, want)
	}
}
