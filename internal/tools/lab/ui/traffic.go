package ui

import (
	"net/netip"
	"strings"
	"sync"
)

// Flow is one conntrack entry that a Service rule DNATed: the connection
// as its client sent it, and the endpoint the node sent it to (the source
// of the replies). Entries without DNAT (a pod's own connections, probes,
// health checks) are no Service's traffic and are not flows.
type Flow struct {
	Protocol string // TCP, UDP or SCTP
	Src, Dst netip.AddrPort
	Endpoint netip.AddrPort
}

// Key is the endpoint's name, as EndpointKey.
func (f Flow) Key() string { return EndpointKey(f.Protocol, f.Endpoint) }

// Traffic counts the new connections each endpoint took, from successive
// dumps of every node's conntrack table: a flow in a node's dump that was
// not in its previous one is a new connection. A closed TCP connection's
// entry stays in the table for the TIME_WAIT timeout (two minutes), far
// longer than a tick, so none is missed between two dumps. Counting is
// by tick (one second); the node that DNATed a connection is the one that
// counts it, so a connection crossing two nodes counts once.
type Traffic struct {
	mu     sync.Mutex
	keep   int // ticks of history kept per endpoint
	window int // ticks summed in the window

	seen  map[string]map[Flow]bool // by node: the flows of its last dump
	now   map[string]int           // new connections by endpoint, this tick
	ticks []map[string]int         // the last keep ticks, oldest first
	total map[string]int

	windowByKey, windowByAddr map[string]int // computed by Tick
}

// NewTraffic keeps keep ticks of history and sums the last window of them.
func NewTraffic(keep, window int) *Traffic {
	return &Traffic{keep: keep, window: min(window, keep), seen: map[string]map[Flow]bool{}, now: map[string]int{},
		total: map[string]int{}, windowByKey: map[string]int{}, windowByAddr: map[string]int{}}
}

// Observe takes a node's current flows. The first dump of a node only sets
// what it already had.
func (t *Traffic) Observe(node string, flows []Flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev, primed := t.seen[node]
	cur := make(map[Flow]bool, len(flows))
	for _, f := range flows {
		cur[f] = true
		if primed && !prev[f] {
			t.now[f.Key()]++
			t.total[f.Key()]++
		}
	}
	t.seen[node] = cur
}

// Forget drops what a node's last dump held (the node's table could not be
// read): its next dump sets a new baseline.
func (t *Traffic) Forget(node string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.seen, node)
}

// Tick ends the current tick.
func (t *Traffic) Tick() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ticks = append(t.ticks, t.now)
	if len(t.ticks) > t.keep {
		t.ticks = t.ticks[len(t.ticks)-t.keep:]
	}
	t.now = map[string]int{}
	clear(t.windowByKey)
	clear(t.windowByAddr)
	for _, tick := range t.ticks[max(0, len(t.ticks)-t.window):] {
		for key, n := range tick {
			t.windowByKey[key] += n
			t.windowByAddr[addrOfKey(key)] += n
		}
	}
}

// Of returns an endpoint's new connections in the window, since the start,
// and per tick over the history, oldest first.
func (t *Traffic) Of(key string) (window, total int, recent []int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	recent = make([]int, t.keep)
	for i, tick := range t.ticks {
		recent[t.keep-len(t.ticks)+i] = tick[key]
	}
	return t.windowByKey[key], t.total[key], recent
}

// WindowOfAddr sums the window over every endpoint at addr (a pod's).
func (t *Traffic) WindowOfAddr(addr netip.Addr) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.windowByAddr[addr.String()]
}

// WindowSeconds is the window's length.
func (t *Traffic) WindowSeconds() int { return t.window }

// addrOfKey is the address of "PROTO addr:port".
func addrOfKey(key string) string {
	_, endpoint, _ := strings.Cut(key, " ")
	ap, err := netip.ParseAddrPort(endpoint)
	if err != nil {
		return ""
	}
	return ap.Addr().String()
}
