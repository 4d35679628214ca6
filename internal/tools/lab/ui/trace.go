package ui

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// TraceAnswer is what /api/trace answers: the node that handles the
// packet, and `svcproxy trace`'s result there.
type TraceAnswer struct {
	Node   string          `json:"node"`
	Result *explain.Result `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// serveTrace answers /api/trace?src=SOURCE&dst=IP:PORT&proto=tcp[&via=NODE],
// where SOURCE is "client", "node:NAME" or "pod:NAMESPACE/NAME".
func (s *Server) serveTrace(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	node, pkt, err := s.tracePacket(q.Get("src"), q.Get("dst"), q.Get("proto"), q.Get("via"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, TraceAnswer{Error: err.Error()})
		return
	}
	res, err := s.opts.Nodes.Trace(r.Context(), node, pkt)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, TraceAnswer{Node: node.Name, Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, TraceAnswer{Node: node.Name, Result: res})
}

// tracePacket turns the page's question into the packet and the node
// whose rules it meets first: a pod's node, the node itself, or for the
// client the node whose address it is sent to, else via, else the first
// node the load balancer routes the address to.
func (s *Server) tracePacket(src, dst, proto, via string) (lab.Node, plan.Packet, error) {
	d, err := netip.ParseAddrPort(dst)
	if err != nil {
		return lab.Node{}, plan.Packet{}, fmt.Errorf("destination %q: want IP:PORT", dst)
	}
	kind, name, _ := strings.Cut(src, ":")
	var node lab.Node
	var from netip.Addr
	fromHost := false
	switch kind {
	case "client":
		from = pick(d.Addr(), lab.ClientIP, lab.ClientIPv6)
		node, err = s.clientNode(d.Addr(), via)
	case "node":
		var ok bool
		if node, ok = s.opts.Lab.Node(name); !ok {
			err = fmt.Errorf("source %q: no node %q in lab %s", src, name, s.opts.Lab.Name)
		}
		from, fromHost = pick(d.Addr(), node.IP, node.IPv6), true
	case "pod":
		node, from, err = s.podSource(name, d.Addr())
	default:
		err = fmt.Errorf("source %q: want client, node:NAME or pod:NAMESPACE/NAME", src)
	}
	if err != nil {
		return lab.Node{}, plan.Packet{}, err
	}
	pkt, err := explain.ParsePacket(from.String(), dst, proto)
	pkt.FromHost = fromHost
	return node, pkt, err
}

// pick is v4 or v6, the one of dst's family.
func pick(dst, v4, v6 netip.Addr) netip.Addr {
	if dst.Is4() {
		return v4
	}
	return v6
}

// clientNode is the node a packet from the client to dst reaches.
func (s *Server) clientNode(dst netip.Addr, via string) (lab.Node, error) {
	for _, n := range s.opts.Lab.Nodes {
		if n.IP == dst || n.IPv6 == dst {
			return n, nil
		}
	}
	if via != "" {
		if n, ok := s.opts.Lab.Node(via); ok {
			return n, nil
		}
		return lab.Node{}, fmt.Errorf("via %q: no such node in lab %s", via, s.opts.Lab.Name)
	}
	s.mu.Lock()
	routes := s.probes.routes
	s.mu.Unlock()
	for _, r := range routes {
		if r.Address == dst.String() && len(r.Nodes) > 0 {
			n, _ := s.opts.Lab.Node(r.Nodes[0])
			return n, nil
		}
	}
	return lab.Node{}, fmt.Errorf("the client has no route to %s through a node: pick a node (via)", dst)
}

// podSource finds a pod's node and its address of dst's family.
func (s *Server) podSource(name string, dst netip.Addr) (lab.Node, netip.Addr, error) {
	ns, pod, ok := strings.Cut(name, "/")
	if !ok {
		return lab.Node{}, netip.Addr{}, fmt.Errorf("source pod %q: want NAMESPACE/NAME", name)
	}
	p, err := s.lists.pods.Pods(ns).Get(pod)
	if err != nil {
		return lab.Node{}, netip.Addr{}, fmt.Errorf("source pod %s: %w", name, err)
	}
	node, ok := s.opts.Lab.Node(p.Spec.NodeName)
	if !ok {
		return lab.Node{}, netip.Addr{}, fmt.Errorf("source pod %s is on no node of the lab (%q)", name, p.Spec.NodeName)
	}
	if a, ok := podAddr(p, dst.Is4()); ok {
		return node, a, nil
	}
	return lab.Node{}, netip.Addr{}, errors.New("source pod " + name + " has no address of the destination's family")
}

func podAddr(p *corev1.Pod, v4 bool) (netip.Addr, bool) {
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
