package health

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// ServiceOptions configure a ServiceHealth.
type ServiceOptions struct {
	// Proxy tells whether the proxy is healthy (usually a *ProxyHealth).
	// Nil counts as healthy.
	Proxy interface{ Healthy() bool }
	// Listen opens a listener; nil means net.Listen. Tests inject one.
	Listen func(network, address string) (net.Listener, error)
	// Log receives, at -v=2, each server opened and closed.
	Log logr.Logger
}

// ServiceHealth runs the health-check node ports, as kube-proxy does: one
// server per Service and IP family, listening where the plan's node-port
// address set says (plan.Plan.NodePorts), and counting the local ready
// endpoints the plan's health checks name.
type ServiceHealth struct {
	opts ServiceOptions

	mu       sync.Mutex
	services map[serviceKey]*serviceServer
}

// serviceName is a Service's namespace and name.
type serviceName struct{ Namespace, Name string }

func (n serviceName) String() string { return n.Namespace + "/" + n.Name }

// serviceKey is one Service in one family: each has its own server.
type serviceKey struct {
	serviceName
	family plan.Family
}

// serviceServer is the running health check of one Service in one family.
type serviceServer struct {
	name      serviceName
	port      uint16
	addrs     []string // where it listens
	proxy     interface{ Healthy() bool }
	servers   []*http.Server
	listeners []net.Listener
	count     atomic.Int64 // distinct local ready endpoint IPs
}

// wanted is what one Service needs in one family: its health port, the
// addresses to listen on and its local ready IPs.
type wanted struct {
	port  uint16
	addrs []string
	ips   map[netip.Addr]struct{}
}

// NewServiceHealth returns a ServiceHealth that runs no server yet.
func NewServiceHealth(opts ServiceOptions) *ServiceHealth {
	if opts.Listen == nil {
		opts.Listen = net.Listen
	}
	return &ServiceHealth{opts: opts, services: map[serviceKey]*serviceServer{}}
}

// Sync makes the running servers match p: it starts servers for Services
// whose ports have externalTrafficPolicy Local and a healthCheckNodePort,
// stops those of Services that no longer need one (or moved port or
// address), and sets each server's count of distinct local ready endpoint
// IPs over the Service's ports of its family. A port that fails to bind is
// reported in the returned error and retried on the next Sync; the other
// Services keep serving.
func (s *ServiceHealth) Sync(p *plan.Plan) error {
	want := wantedServices(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, srv := range s.services {
		if w, ok := want[key]; !ok || w.port != srv.port || !slices.Equal(w.addrs, srv.addrs) {
			s.opts.Log.V(2).Info("Closing healthcheck", "service", key.serviceName, "ipFamily", key.family, "port", srv.port)
			srv.close()
			delete(s.services, key)
		}
	}
	var errs []error
	for _, key := range slices.SortedFunc(maps.Keys(want), compareServiceKeys) {
		w := want[key]
		srv := s.services[key]
		if srv == nil {
			var err error
			if srv, err = s.start(key, w); err != nil {
				errs = append(errs, err)
				continue
			}
			s.services[key] = srv
		}
		srv.count.Store(int64(len(w.ips)))
	}
	return errors.Join(errs...)
}

func compareServiceKeys(a, b serviceKey) int {
	return cmp.Or(cmp.Compare(a.String(), b.String()), cmp.Compare(a.family, b.family))
}

// wantedServices groups the plan's ports by Service and family. If a
// Service's ports disagree on the health port (the API does not allow it),
// the lowest wins.
func wantedServices(p *plan.Plan) map[serviceKey]*wanted {
	want := map[serviceKey]*wanted{}
	if p == nil {
		return want
	}
	for _, sp := range p.Ports {
		hc := sp.HealthCheck
		if hc.NodePort == 0 {
			continue
		}
		key := serviceKey{serviceName{sp.Namespace, sp.Name}, sp.Family}
		w := want[key]
		if w == nil {
			w = &wanted{port: hc.NodePort, ips: map[netip.Addr]struct{}{}}
			want[key] = w
		}
		w.port = min(w.port, hc.NodePort)
		for _, ip := range hc.LocalEndpoints {
			w.ips[ip] = struct{}{}
		}
	}
	for key, w := range want {
		w.addrs = listenAddresses(p.NodePorts(key.family), key.family, w.port)
	}
	return want
}

// listenAddresses are where a health port of family f listens: the
// family's wildcard address, or each of the node addresses
// nodePortAddresses selects.
func listenAddresses(n plan.NodePortAddrs, f plan.Family, port uint16) []string {
	p := strconv.Itoa(int(port))
	ips := n.HealthIPs
	if n.HealthAnyLocal {
		if f == plan.IPv6 {
			return []string{net.JoinHostPort("::", p)}
		}
		return []string{net.JoinHostPort("0.0.0.0", p)}
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip.String(), p))
	}
	return out
}

// start listens on every address of one Service's family ("tcp4" or
// "tcp6", so that the two families' servers share the port as
// kube-proxy's do); on a failure it closes what it opened, so the port is
// free for a retry.
func (s *ServiceHealth) start(key serviceKey, w *wanted) (*serviceServer, error) {
	srv := &serviceServer{name: key.serviceName, port: w.port, addrs: w.addrs, proxy: s.opts.Proxy}
	network := "tcp4"
	if key.family == plan.IPv6 {
		network = "tcp6"
	}
	s.opts.Log.V(2).Info("Opening healthcheck", "service", key.serviceName, "ipFamily", key.family, "port", w.port, "addresses", w.addrs)
	for _, addr := range w.addrs {
		ln, err := s.opts.Listen(network, addr)
		if err != nil {
			srv.close()
			return nil, fmt.Errorf("health check of Service %s (%s) on port %d: %w", key.serviceName, key.family, w.port, err)
		}
		hs := &http.Server{Handler: srv}
		srv.servers, srv.listeners = append(srv.servers, hs), append(srv.listeners, ln)
		go func() { _ = hs.Serve(ln) }() // returns ErrServerClosed on close
	}
	return srv, nil
}

// Close stops every server.
func (s *ServiceHealth) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for key, srv := range s.services {
		errs = append(errs, srv.close())
		delete(s.services, key)
	}
	return errors.Join(errs...)
}

// close stops the servers and closes their listeners now: a Serve that
// has not started yet would close its listener only when it runs, and the
// port must be free when close returns (a failed start is retried).
func (srv *serviceServer) close() error {
	var errs []error
	for _, hs := range srv.servers {
		errs = append(errs, hs.Close())
	}
	for _, ln := range srv.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ServeHTTP answers any path with the Service's health, in kube-proxy's
// tab-indented shape (names are quoted as Go does, as kube-proxy does; for
// valid Kubernetes names that is also JSON).
func (srv *serviceServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	count := srv.count.Load()
	healthy := srv.proxy == nil || srv.proxy.Healthy()
	setJSONHeaders(w.Header())
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.FormatInt(count, 10))
	code := http.StatusServiceUnavailable
	if count > 0 && healthy {
		code = http.StatusOK
	}
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %t\n}",
		srv.name.Namespace, srv.name.Name, count, healthy)
}
