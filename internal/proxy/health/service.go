package health

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// ServiceOptions configure a ServiceHealth.
type ServiceOptions struct {
	// Addresses are the node IPs allowed by nodePortAddresses; each server
	// listens on each of them. Empty: listen on all addresses (":port").
	Addresses []netip.Addr
	// Proxy tells whether the proxy is healthy (usually a *ProxyHealth).
	// Nil counts as healthy.
	Proxy interface{ Healthy() bool }
	// Listen opens a listener; nil means net.Listen. Tests inject one.
	Listen func(network, address string) (net.Listener, error)
}

// ServiceHealth runs one health-check server per Service that needs one.
type ServiceHealth struct {
	opts ServiceOptions

	mu       sync.Mutex
	services map[serviceName]*serviceServer
}

// serviceName is a Service's namespace and name.
type serviceName struct{ Namespace, Name string }

func (n serviceName) String() string { return n.Namespace + "/" + n.Name }

// serviceServer is the running health check of one Service.
type serviceServer struct {
	name      serviceName
	port      uint16
	proxy     interface{ Healthy() bool }
	servers   []*http.Server
	listeners []net.Listener
	count     atomic.Int64 // distinct local ready endpoint IPs
}

// wanted is what one Service needs: its health port and local ready IPs.
type wanted struct {
	port uint16
	ips  map[netip.Addr]struct{}
}

// NewServiceHealth returns a ServiceHealth that runs no server yet.
func NewServiceHealth(opts ServiceOptions) *ServiceHealth {
	if opts.Listen == nil {
		opts.Listen = net.Listen
	}
	return &ServiceHealth{opts: opts, services: map[serviceName]*serviceServer{}}
}

// Sync makes the running servers match p: it starts servers for Services
// whose ports have externalTrafficPolicy Local and a healthCheckNodePort,
// stops those of Services that no longer need one (or moved port), and sets
// each Service's count of distinct local ready endpoint IPs over all its
// ports and families. A port that fails to bind is reported in the returned
// error and retried on the next Sync; the other Services keep serving.
func (s *ServiceHealth) Sync(p *plan.Plan) error {
	want := wantedServices(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, srv := range s.services {
		if w, ok := want[name]; !ok || w.port != srv.port {
			srv.close()
			delete(s.services, name)
		}
	}
	var errs []error
	for name, w := range want {
		srv := s.services[name]
		if srv == nil {
			var err error
			if srv, err = s.start(name, w.port); err != nil {
				errs = append(errs, err)
				continue
			}
			s.services[name] = srv
		}
		srv.count.Store(int64(len(w.ips)))
	}
	return errors.Join(errs...)
}

// wantedServices groups the plan's ports by Service. If a Service's ports
// disagree on the health port (the API does not allow it), the lowest wins.
func wantedServices(p *plan.Plan) map[serviceName]*wanted {
	want := map[serviceName]*wanted{}
	if p == nil {
		return want
	}
	for _, sp := range p.Ports {
		if !sp.ExternalLocal || sp.HealthCheckNodePort == 0 {
			continue
		}
		name := serviceName{sp.Namespace, sp.Name}
		w := want[name]
		if w == nil {
			w = &wanted{port: sp.HealthCheckNodePort, ips: map[netip.Addr]struct{}{}}
			want[name] = w
		}
		w.port = min(w.port, sp.HealthCheckNodePort)
	}
	for _, sp := range p.Ports {
		if w := want[serviceName{sp.Namespace, sp.Name}]; w != nil {
			addLocalReady(w.ips, sp.Endpoints)
		}
	}
	return want
}

// addLocalReady adds the IPs of local ready endpoints. Terminating endpoints
// are not ready: a node with only those must fail its health check.
func addLocalReady(ips map[netip.Addr]struct{}, eps []plan.Endpoint) {
	for _, ep := range eps {
		if ep.Local && ep.Ready {
			ips[ep.Addr.Addr()] = struct{}{}
		}
	}
}

// start listens on every address for one Service; on a failure it closes
// what it opened, so the port is free for a retry.
func (s *ServiceHealth) start(name serviceName, port uint16) (*serviceServer, error) {
	srv := &serviceServer{name: name, port: port, proxy: s.opts.Proxy}
	for _, addr := range s.listenAddresses(port) {
		ln, err := s.opts.Listen("tcp", addr)
		if err != nil {
			srv.close()
			return nil, fmt.Errorf("health check of Service %s on port %d: %w", name, port, err)
		}
		hs := &http.Server{Handler: srv}
		srv.servers, srv.listeners = append(srv.servers, hs), append(srv.listeners, ln)
		go func() { _ = hs.Serve(ln) }() // returns ErrServerClosed on close
	}
	return srv, nil
}

func (s *ServiceHealth) listenAddresses(port uint16) []string {
	p := strconv.Itoa(int(port))
	if len(s.opts.Addresses) == 0 {
		return []string{":" + p}
	}
	out := make([]string, 0, len(s.opts.Addresses))
	for _, a := range s.opts.Addresses {
		out = append(out, net.JoinHostPort(a.String(), p))
	}
	return out
}

// Close stops every server.
func (s *ServiceHealth) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for name, srv := range s.services {
		errs = append(errs, srv.close())
		delete(s.services, name)
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
