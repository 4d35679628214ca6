package ui

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// Nodes is how the page asks the lab's machines: each node's conntrack
// table and svcproxy, its health-check node ports as the load balancer
// sees them, the load balancer's routes, and `svcproxy trace`. LabNodes
// asks the real ones; tests and the benchmark can draw without a kernel.
type Nodes interface {
	// Flows dumps the node's conntrack table, once, and returns the
	// entries a Service rule DNATed.
	Flows(ctx context.Context, n lab.Node) ([]Flow, error)
	// Proxy asks the node's svcproxy for its health and last sync.
	Proxy(ctx context.Context, n lab.Node) ProxyView
	// HealthCheck asks a health-check node port of the node.
	HealthCheck(ctx context.Context, n lab.Node, port int) HealthCheckView
	// Routes lists the load balancer's routes.
	Routes(ctx context.Context) ([]Route, error)
	// Trace is `svcproxy trace` on the node.
	Trace(ctx context.Context, n lab.Node, pkt plan.Packet) (*explain.Result, error)
}

// metricsAddr is where the lab's svcproxy serves its metrics and
// explanations, inside each node's namespace.
const metricsAddr = "127.0.0.1:10249"

// LabNodes asks the nodes of a running lab. Its netlink handles (one per
// namespace, kept open) are closed by Close.
type LabNodes struct {
	st      *lab.State
	mu      sync.Mutex
	handles map[string]*netlink.Handle // by namespace
}

// NewLabNodes asks the nodes of st; it opens nothing yet.
func NewLabNodes(st *lab.State) *LabNodes {
	return &LabNodes{st: st, handles: map[string]*netlink.Handle{}}
}

// Close closes the netlink handles.
func (l *LabNodes) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, h := range l.handles {
		h.Close()
		delete(l.handles, name)
	}
}

// handle returns the netlink handle of a namespace, opening it once.
func (l *LabNodes) handle(name string) (*netlink.Handle, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h, ok := l.handles[name]; ok {
		return h, nil
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	l.handles[name] = h
	return h, nil
}

// drop forgets a namespace's handle after an error, so that the next call
// opens a new one (the namespace may have been recreated).
func (l *LabNodes) drop(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h, ok := l.handles[name]; ok {
		h.Close()
		delete(l.handles, name)
	}
}

// Flows dumps both families' entries in one netlink request.
func (l *LabNodes) Flows(_ context.Context, n lab.Node) ([]Flow, error) {
	h, err := l.handle(n.Netns)
	if err != nil {
		return nil, err
	}
	entries, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_UNSPEC)
	if err != nil {
		// An interrupted dump is partial: counting from it would see
		// the missing flows as new next time.
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			l.drop(n.Netns)
		}
		return nil, fmt.Errorf("conntrack dump in %s: %w", n.Netns, err)
	}
	return dnatFlows(entries), nil
}

// dnatFlows keeps the entries whose reply comes from another address than
// the one the client asked: those a Service rule DNATed.
func dnatFlows(entries []*netlink.ConntrackFlow) []Flow {
	var out []Flow
	for _, e := range entries {
		proto := protocolName(e.Forward.Protocol)
		dst := addrPort(e.Forward.DstIP, e.Forward.DstPort)
		endpoint := addrPort(e.Reverse.SrcIP, e.Reverse.SrcPort)
		if proto == "" || dst == endpoint || !endpoint.IsValid() {
			continue
		}
		out = append(out, Flow{Protocol: proto, Src: addrPort(e.Forward.SrcIP, e.Forward.SrcPort), Dst: dst, Endpoint: endpoint})
	}
	return out
}

func protocolName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "TCP"
	case unix.IPPROTO_UDP:
		return "UDP"
	case unix.IPPROTO_SCTP:
		return "SCTP"
	}
	return ""
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), port)
}

// Proxy asks /healthz from the client, as a load balancer does, and the
// last sync from the metrics server, as `svcproxy status` does.
func (l *LabNodes) Proxy(ctx context.Context, n lab.Node) ProxyView {
	var v ProxyView
	if code, _, err := nsrun.Get(ctx, l.st.ClientNetns(), "http://"+net.JoinHostPort(n.IP.String(), "10256")+"/healthz", 0); err == nil {
		v.Healthz = code
	}
	s, err := explain.Node{Netns: n.Netns, Metrics: metricsAddr}.Status(ctx)
	if err != nil {
		v.Error = err.Error()
		return v
	}
	v.LastSync, v.Took, v.Full, v.Syncs, v.Failures = s.Sync.At, s.Sync.Took, s.Sync.Full, s.Sync.Syncs, s.Sync.Failures
	if s.Sync.Error != "" {
		v.Error = s.Sync.Error
	}
	return v
}

// HealthCheck asks from the client, as the load balancer does.
func (l *LabNodes) HealthCheck(ctx context.Context, n lab.Node, port int) HealthCheckView {
	v := HealthCheckView{Port: port}
	var err error
	v.Status, v.LocalEndpoints, err = l.st.AskHealthCheck(ctx, n, port, 0)
	if err != nil {
		v.Error = err.Error()
	}
	return v
}

// Routes reads the client's routes into the load-balancer pool.
func (l *LabNodes) Routes(context.Context) ([]Route, error) {
	h, err := l.handle(l.st.ClientNetns())
	if err != nil {
		return nil, err
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		l.drop(l.st.ClientNetns())
		return nil, fmt.Errorf("routes in %s: %w", l.st.ClientNetns(), err)
	}
	return poolRoutes(l.st, routes), nil
}

// poolRoutes keeps the routes to load-balancer addresses, naming the
// nodes they go through.
func poolRoutes(st *lab.State, routes []netlink.Route) []Route {
	var out []Route
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok || !lab.LBPool.Contains(dst.Unmap()) {
			continue
		}
		gws := []net.IP{r.Gw}
		for _, hop := range r.MultiPath {
			gws = append(gws, hop.Gw)
		}
		route := Route{Address: dst.Unmap().String(), Nodes: []string{}}
		for _, gw := range gws {
			if name := nodeNamed(st, gw); name != "" {
				route.Nodes = append(route.Nodes, name)
			}
		}
		out = append(out, route)
	}
	return out
}

// nodeNamed is the name of the node with LAN address ip, or "".
func nodeNamed(st *lab.State, ip net.IP) string {
	a, ok := netip.AddrFromSlice(ip)
	for _, n := range st.Nodes {
		if ok && n.IP == a.Unmap() {
			return n.Name
		}
	}
	return ""
}

// Trace runs `svcproxy trace` against the node's svcproxy.
func (l *LabNodes) Trace(ctx context.Context, n lab.Node, pkt plan.Packet) (*explain.Result, error) {
	return explain.Node{Netns: n.Netns, Metrics: metricsAddr}.Trace(ctx, pkt)
}
