// Package classes is a dataplane for tests only: it renders the plan into
// a table of packet classes, each with its outcome, and traces packets
// through that table with the dataplane package's tracer. It exists to
// show that a dataplane needs no policy code: it reads the plan's
// outcomes (routes, pools, firewall, hairpin set, node-port addresses) and
// translates them, and the shared flow table holds it to the plan.
package classes

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Row is one class of packets and what it gets. The first row that
// matches a packet decides.
type Row struct {
	Proto    string     // "tcp", "udp", "sctp"; "" for any
	Dst      netip.Addr // invalid: any address accepting NodePorts
	Port     uint16     // 0: any port
	From     plan.Sources
	NotFrom  []netip.Prefix // sources outside these match (a firewall)
	Action   plan.Action
	To       []netip.AddrPort // Forward: the endpoints, equally likely
	Masq     plan.Masquerade
	Hairpin  []netip.Addr // Forward: endpoints masqueraded when they are the source
	Affinity int32
}

// Table is one family's rows, and where NodePorts are accepted.
type Table struct {
	Rows      []Row
	NodePorts plan.NodePortAddrs
}

// Dataplane keeps a table per family; every sync rewrites them.
type Dataplane struct{ Tables map[plan.Family]*Table }

// Sync renders the plan.
func (d *Dataplane) Sync(_ context.Context, p *plan.Plan, _ plan.Changes) error {
	d.Tables = map[plan.Family]*Table{}
	for _, f := range plan.Families {
		t := &Table{NodePorts: p.NodePorts(f)}
		var cips []netip.Addr
		for _, sp := range p.PortsOf(f) {
			t.Rows = append(t.Rows, rows(sp)...)
			cips = append(cips, sp.ClusterIP)
		}
		slices.SortFunc(cips, netip.Addr.Compare)
		for _, ip := range slices.Compact(cips) { // any other port of a ClusterIP
			t.Rows = append(t.Rows, Row{Dst: ip, Action: plan.Reject})
		}
		d.Tables[f] = t
	}
	return nil
}

// Cleanup forgets the tables.
func (d *Dataplane) Cleanup(context.Context) error {
	d.Tables = nil
	return nil
}

// rows translates one service port: per address, its firewall, then its
// route's bypasses, then its default.
func rows(sp *plan.ServicePort) []Row {
	proto := strings.ToLower(string(sp.Protocol))
	route := func(dst netip.Addr, port uint16, r *plan.Route) []Row {
		var out []Row
		row := func(from plan.Sources, o plan.Outcome) {
			out = append(out, Row{Proto: proto, Dst: dst, Port: port, From: from, Action: o.Action,
				To: sp.Backends(o.Pool), Masq: o.Masquerade, Hairpin: sp.Hairpin, Affinity: sp.AffinitySeconds})
		}
		for _, b := range r.Bypasses {
			row(b.From, b.Outcome)
		}
		row(plan.Sources{}, r.Default)
		return out
	}
	out := route(sp.ClusterIP, sp.Port, &sp.Internal)
	for _, ip := range sp.ExternalIPs {
		out = append(out, route(ip, sp.Port, &sp.External)...)
	}
	for _, ip := range sp.LoadBalancerIPs {
		if len(sp.Firewall.Allow) > 0 {
			out = append(out, Row{Proto: proto, Dst: ip, Port: sp.Port, NotFrom: sp.Firewall.Allow, Action: sp.Firewall.Outside})
		}
		out = append(out, route(ip, sp.Port, &sp.External)...)
	}
	if sp.NodePort != 0 {
		out = append(out, route(netip.Addr{}, sp.NodePort, &sp.External)...)
	}
	return out
}

func (r Row) String() string {
	dst := "nodeports"
	if r.Dst.IsValid() {
		dst = r.Dst.String()
	}
	s := fmt.Sprintf("%s:%d/%s from %+v", dst, r.Port, r.Proto, r.From)
	if len(r.NotFrom) > 0 {
		s += fmt.Sprintf(" not from %v", r.NotFrom)
	}
	s += " -> " + string(r.Action)
	if r.Action == plan.Forward {
		s += fmt.Sprintf(" %v masq %+v affinity %d", r.To, r.Masq, r.Affinity)
	}
	return s
}

// Trace walks pkt through the table of its family.
func (d *Dataplane) Trace(localAddrs []netip.Addr, pkt plan.Packet) ([]dataplane.TracePath, error) {
	t := d.Tables[plan.FamilyOf(pkt.Src)]
	if t == nil {
		return nil, fmt.Errorf("no table for %s", plan.FamilyOf(pkt.Src))
	}
	return dataplane.Trace(t, localAddrs, pkt)
}

// Hook implements dataplane.Rules: packets meet the table where they
// enter, from the network or from the node.
func (t *Table) Hook(h dataplane.Hook) []string {
	if h == dataplane.Prerouting || h == dataplane.Output {
		return []string{"classes"}
	}
	return nil
}

// Chain implements dataplane.Rules.
func (t *Table) Chain(name string) ([]string, bool) {
	if name != "classes" {
		return nil, false
	}
	out := make([]string, len(t.Rows))
	for i, r := range t.Rows {
		out[i] = r.String()
	}
	return out, true
}

// Eval implements dataplane.Rules: whether row i matches the packet, and
// what it does.
func (t *Table) Eval(w *dataplane.Walk, _ string, i int) (dataplane.Verdict, error) {
	r := t.Rows[i]
	switch {
	case r.Proto != "" && r.Proto != w.Proto, r.Port != 0 && r.Port != w.DPort,
		r.Dst.IsValid() && r.Dst != w.Dst, !r.Dst.IsValid() && !t.NodePorts.Accepts(w.Dst, w.IsLocal),
		(r.From.Node || len(r.From.Prefixes) > 0) && !r.From.Match(w.Src, w.FromLocal()),
		len(r.NotFrom) > 0 && slices.ContainsFunc(r.NotFrom, func(p netip.Prefix) bool { return p.Contains(w.Src) }):
		return dataplane.Verdict{}, nil
	}
	switch r.Action {
	case plan.Reject:
		return dataplane.Verdict{Kind: dataplane.Reject}, nil
	case plan.Drop:
		return dataplane.Verdict{Kind: dataplane.Drop}, nil
	case plan.Forward:
		ep := r.To[w.Choose(len(r.To))]
		if r.Masq.Applies(w.Src) || ep.Addr() == w.Src && slices.Contains(r.Hairpin, w.Src) {
			w.Masquerade()
		}
		if r.Affinity > 0 {
			w.Pin(r.Affinity)
		}
		w.DNAT(ep)
		return dataplane.Verdict{Kind: dataplane.Accept}, nil
	}
	return dataplane.Verdict{}, fmt.Errorf("row %d: action %q", i, r.Action)
}
