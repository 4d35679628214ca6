// Package ui serves the lab's web page: a live picture of the cluster as
// the seeds draw it. The nodes side by side with their pods, the client
// and the load balancer outside, the Services with their addresses and
// traffic policies; per endpoint, the new connections it took in the last
// seconds, read from every node's conntrack table; each node's answers to
// the health-check node ports; and a packet's path through a node's rules,
// as `svcproxy trace` walks it.
//
// The page is a small static one (page/, embedded): plain JavaScript that
// draws SVG and HTML from the snapshots the server pushes as server-sent
// events, on every change of the cluster's objects (informers) and every
// second with what the nodes answered. `svcproxy lab up` starts the server
// as the lab process "ui", on a listener on the machine's loopback.
package ui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

//go:embed page
var page embed.FS

// Options configures a Server.
type Options struct {
	Lab    *lab.State
	Client kubernetes.Interface // the lab's API server
	// Nodes answers for the lab's machines; LabNodes(Lab) by default.
	Nodes Nodes
	// Period is how often the nodes are asked, 1 s by default.
	Period time.Duration
	Logf   func(format string, args ...any)
}

// History: per endpoint the page shows the new connections of the last
// windowTicks ticks and a sparkline of the last historyTicks.
const (
	historyTicks = 30
	windowTicks  = 5
)

// Server serves the page. New starts nothing; Run does.
type Server struct {
	opts    Options
	traffic *Traffic
	hub     hub
	lists   listers

	mu     sync.Mutex
	probes probes
}

// New returns a server for opts.
func New(opts Options) *Server {
	if opts.Nodes == nil {
		opts.Nodes = NewLabNodes(opts.Lab)
	}
	if opts.Period == 0 {
		opts.Period = time.Second
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	return &Server{opts: opts, traffic: NewTraffic(historyTicks, windowTicks)}
}

// Run serves on l until ctx ends.
func (s *Server) Run(ctx context.Context, l net.Listener) error {
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	factory := informers.NewSharedInformerFactory(s.opts.Client, 0)
	lists, err := watch(factory, poke)
	if err != nil {
		return err
	}
	s.lists = lists
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return errors.New("ui: cache of " + typ.String() + " did not sync")
		}
	}
	s.tick(ctx) // the first snapshot has the nodes' answers
	go s.askNodes(ctx, poke)
	go s.publish(ctx, changed)
	poke()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	s.opts.Logf("ui: serving the page of lab %s on http://%s/", s.opts.Lab.Name, l.Addr())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// askNodes asks every node each period, then pokes the publisher.
func (s *Server) askNodes(ctx context.Context, poke func()) {
	t := time.NewTicker(s.opts.Period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.tick(ctx)
		poke()
	}
}

// tick asks every node and ends the traffic's tick.
func (s *Server) tick(ctx context.Context) {
	pr := s.ask(ctx)
	s.traffic.Tick()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.probes = pr
}

// ask asks every node, in parallel, bounded by the period.
func (s *Server) ask(ctx context.Context) probes {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Period*8/10)
	defer cancel()
	local := s.localServices()
	pr := probes{proxy: map[string]ProxyView{}, health: map[string][]HealthCheckView{}, errs: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range s.opts.Lab.Nodes {
		wg.Go(func() {
			flows, ferr := s.opts.Nodes.Flows(ctx, n)
			if ferr != nil {
				s.traffic.Forget(n.Name)
			} else {
				s.traffic.Observe(n.Name, flows)
			}
			proxy := s.opts.Nodes.Proxy(ctx, n)
			var checks []HealthCheckView
			for _, svc := range local {
				hc := s.opts.Nodes.HealthCheck(ctx, n, svc.port)
				hc.Service = svc.name
				checks = append(checks, hc)
			}
			mu.Lock()
			defer mu.Unlock()
			pr.proxy[n.Name], pr.health[n.Name] = proxy, checks
			if ferr != nil {
				pr.errs[n.Name] = ferr.Error()
			}
		})
	}
	routes, err := s.opts.Nodes.Routes(ctx)
	if err != nil {
		s.opts.Logf("ui: %v", err)
	}
	pr.routes = routes
	wg.Wait()
	return pr
}

// localService is a Service with a health-check node port.
type localService struct {
	name string
	port int
}

func (s *Server) localServices() []localService {
	svcs, err := s.lists.services.List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []localService
	for _, svc := range svcs {
		if svc.Spec.HealthCheckNodePort != 0 {
			out = append(out, localService{svc.Namespace + "/" + svc.Name, int(svc.Spec.HealthCheckNodePort)})
		}
	}
	return out
}

// publish builds and publishes a snapshot on every poke.
func (s *Server) publish(ctx context.Context, changed <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		snap, err := s.snapshot()
		if err != nil {
			s.opts.Logf("ui: %v", err)
			continue
		}
		data, err := json.Marshal(snap)
		if err != nil {
			s.opts.Logf("ui: %v", err)
			continue
		}
		s.hub.publish(data)
	}
}

// snapshot builds the current snapshot.
func (s *Server) snapshot() (Snapshot, error) {
	obj, err := s.lists.objects()
	if err != nil {
		return Snapshot{}, err
	}
	s.mu.Lock()
	pr := s.probes
	s.mu.Unlock()
	return build(s.opts.Lab, obj, pr, s.traffic, time.Now()), nil
}

// Handler serves the page, its snapshots and traces. It answers only
// requests addressed to the loopback, so that a web page from elsewhere
// cannot read it through a name that resolves to 127.0.0.1 (DNS
// rebinding).
func (s *Server) Handler() http.Handler {
	static, _ := fs.Sub(page, "page") // cannot fail: the directory is embedded
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/snapshot", s.serveSnapshot)
	mux.HandleFunc("GET /api/events", s.serveEvents)
	mux.HandleFunc("GET /api/trace", s.serveTrace)
	return loopbackOnly(mux)
}

func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "the lab's page answers only to http://127.0.0.1:PORT/", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// serveSnapshot answers the latest snapshot, for scripts and curl.
func (s *Server) serveSnapshot(w http.ResponseWriter, _ *http.Request) {
	data, _ := s.hub.latest()
	if data == nil {
		http.Error(w, "no snapshot yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(data)
}

// serveEvents streams every snapshot as a server-sent event.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	for {
		data, next := s.hub.latest()
		if data != nil {
			if _, err := w.Write(append(append([]byte("data: "), data...), '\n', '\n')); err != nil {
				return
			}
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-next:
		}
	}
}

// hub holds the latest snapshot and tells waiters when it changes.
type hub struct {
	mu   sync.Mutex
	data []byte
	next chan struct{} // closed on the next publish
}

func (h *hub) publish(data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.data = data
	if h.next != nil {
		close(h.next)
	}
	h.next = make(chan struct{})
}

// latest returns the latest snapshot (nil before the first) and a channel
// closed when there is a newer one.
func (h *hub) latest() ([]byte, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.next == nil {
		h.next = make(chan struct{})
	}
	return h.data, h.next
}
