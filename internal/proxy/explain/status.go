// Package explain answers the questions people ask a Service proxy: which
// pods will get my request, is it random, why does this NodePort not
// answer here, does Local keep the source IP. Status shows every Service
// port as the running agent planned it; Trace follows one packet through
// the rules the kernel really holds, in the dataplane's own words, and
// checks the result against the plan.
package explain

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Status is what `svcproxy status` shows.
type Status struct {
	Mode  string     `json:"mode"`
	Sync  SyncStatus `json:"lastSync"`
	Ports []Port     `json:"servicePorts"`
}

// SyncStatus is the agent's last sync.
type SyncStatus struct {
	At       time.Time `json:"at"`
	Took     string    `json:"took"`
	Full     bool      `json:"full"`
	Syncs    int       `json:"syncs"`
	Failures int       `json:"failures"`
	Error    string    `json:"error,omitempty"`
	// InProgress: the ports shown are being synced; the kernel may not
	// hold all of them yet.
	InProgress bool `json:"inProgress,omitempty"`
}

// Port is one service port: its addresses, policies and endpoints.
type Port struct {
	Service             string   `json:"service"` // ns/name:port
	Protocol            string   `json:"protocol"`
	ClusterIP           string   `json:"clusterIP"`
	Port                uint16   `json:"port"`
	NodePort            uint16   `json:"nodePort,omitempty"`
	ExternalIPs         []string `json:"externalIPs,omitempty"`
	LoadBalancerIPs     []string `json:"loadBalancerIPs,omitempty"`
	InternalPolicy      string   `json:"internalTrafficPolicy"`
	ExternalPolicy      string   `json:"externalTrafficPolicy"`
	HealthCheckNodePort uint16   `json:"healthCheckNodePort,omitempty"`
	AffinitySeconds     int32    `json:"sessionAffinitySeconds,omitempty"`
	Topology            string   `json:"topology,omitempty"`
	// Scheduler is how the dataplane takes the endpoints in turn ("" for
	// at random); Scheduling what was chosen, and why the dataplane does
	// otherwise, if it does.
	Scheduler  string          `json:"scheduler,omitempty"`
	Scheduling plan.Scheduling `json:"scheduling"`
	Endpoints  []Endpoint      `json:"endpoints"`
	// IPVS are the port's virtual servers in the node's kernel, on an
	// IPVS node (read by the client, over netlink, not by the agent).
	IPVS []VirtualServer `json:"ipvs,omitempty"`
}

// Endpoint is one endpoint of a port and which traffic uses it.
type Endpoint struct {
	Addr        string   `json:"address"`
	Node        string   `json:"node,omitempty"`
	Zone        string   `json:"zone,omitempty"`
	Ready       bool     `json:"ready"`
	Serving     bool     `json:"serving"`
	Terminating bool     `json:"terminating"`
	Local       bool     `json:"local"`
	UsedBy      []string `json:"usedBy"` // "internal", "external"
}

// PortsOf describes every port of the plan, sorted by service.
func PortsOf(p *plan.Plan) []Port {
	var out []Port
	for _, sp := range p.Ports {
		out = append(out, portOf(sp))
	}
	slices.SortFunc(out, func(a, b Port) int {
		return strings.Compare(a.Service+"/"+a.Protocol+a.ClusterIP, b.Service+"/"+b.Protocol+b.ClusterIP)
	})
	return out
}

// portOf shows a port: its policies, topology and endpoints with their
// conditions (the plan's inputs, which only a status display reads), and
// which traffic uses each endpoint (the default outcomes' pools).
func portOf(sp *plan.ServicePort) Port {
	in := &sp.Inputs
	pt := Port{
		Service: sp.Namespace + "/" + sp.Name, Protocol: strings.ToLower(string(sp.Protocol)),
		ClusterIP: sp.ClusterIP.String(), Port: sp.Port, NodePort: sp.NodePort,
		ExternalIPs: strs(sp.ExternalIPs), LoadBalancerIPs: strs(sp.LoadBalancerIPs),
		InternalPolicy: policy(in.InternalLocal), ExternalPolicy: policy(in.ExternalLocal),
		HealthCheckNodePort: sp.HealthCheck.NodePort, AffinitySeconds: sp.AffinitySeconds, Topology: in.Topology,
		Scheduler: sp.Scheduler, Scheduling: sp.Scheduling,
	}
	if sp.Key.Port != "" {
		pt.Service += ":" + sp.Key.Port
	}
	internal, external := usedBy(sp, &sp.Internal), usedBy(sp, &sp.External)
	for _, ep := range in.Endpoints {
		e := Endpoint{Addr: ep.Addr.String(), Node: ep.NodeName, Zone: ep.Zone, Ready: ep.Ready,
			Serving: ep.Serving, Terminating: ep.Terminating, Local: ep.Local, UsedBy: []string{}}
		if slices.Contains(internal, ep.Addr) {
			e.UsedBy = append(e.UsedBy, "internal")
		}
		if slices.Contains(external, ep.Addr) {
			e.UsedBy = append(e.UsedBy, "external")
		}
		pt.Endpoints = append(pt.Endpoints, e)
	}
	return pt
}

// usedBy returns the endpoints a route's default outcome forwards to.
func usedBy(sp *plan.ServicePort, r *plan.Route) []netip.AddrPort {
	if r.Default.Action != plan.Forward {
		return nil
	}
	return sp.Backends(r.Default.Pool)
}

func policy(local bool) string {
	if local {
		return "Local"
	}
	return "Cluster"
}

func strs(addrs []netip.Addr) []string {
	out := []string{}
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// Write prints the status as tables: the sync, then one block per port.
func (s Status) Write(w io.Writer) {
	fmt.Fprintf(w, "mode %s; last sync %s (%s, took %s); %d syncs, %d failed", s.Mode,
		s.Sync.At.Format(time.RFC3339), fullOrPartial(s.Sync.Full), s.Sync.Took, s.Sync.Syncs, s.Sync.Failures)
	if s.Sync.InProgress {
		fmt.Fprint(w, "; syncing what follows now")
	}
	if s.Sync.Error != "" {
		fmt.Fprintf(w, "; last error: %s", s.Sync.Error)
	}
	fmt.Fprintln(w)
	for _, p := range s.Ports {
		fmt.Fprintln(w)
		p.write(w)
	}
}

func fullOrPartial(full bool) string {
	if full {
		return "full"
	}
	return "partial"
}

// write prints one port: a summary line, then its endpoints.
func (p Port) write(w io.Writer) {
	addrs := []string{fmt.Sprintf("%s:%d", p.ClusterIP, p.Port)}
	if p.NodePort != 0 {
		addrs = append(addrs, fmt.Sprintf("nodePort %d", p.NodePort))
	}
	for _, a := range append(slices.Clone(p.ExternalIPs), p.LoadBalancerIPs...) {
		addrs = append(addrs, fmt.Sprintf("%s:%d", a, p.Port))
	}
	fmt.Fprintf(w, "%s (%s) %s\n", p.Service, p.Protocol, strings.Join(addrs, ", "))
	fmt.Fprintf(w, "  internalTrafficPolicy %s, externalTrafficPolicy %s", p.InternalPolicy, p.ExternalPolicy)
	if p.HealthCheckNodePort != 0 {
		fmt.Fprintf(w, ", healthCheckNodePort %d", p.HealthCheckNodePort)
	}
	if p.AffinitySeconds != 0 {
		fmt.Fprintf(w, ", sessionAffinity ClientIP %ds", p.AffinitySeconds)
	}
	if p.Topology != "" {
		fmt.Fprintf(w, ", topology %s", p.Topology)
	}
	fmt.Fprintln(w)
	if line := p.schedulerLine(); line != "" {
		fmt.Fprintln(w, "  "+line)
	}
	p.writeIPVS(w)
	if len(p.Endpoints) == 0 {
		fmt.Fprintln(w, "  no endpoints: connections are rejected")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  ENDPOINT\tNODE\tZONE\tSTATE\tWHERE\tUSED BY\n")
	for _, e := range p.Endpoints {
		where := "remote"
		if e.Local {
			where = "local"
		}
		used := strings.Join(e.UsedBy, ", ")
		if used == "" {
			used = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", e.Addr, orDash(e.Node), orDash(e.Zone), e.state(), where, used)
	}
	tw.Flush()
}

// schedulerLine says how new connections are spread when a scheduler was
// chosen: the one the dataplane uses and where it was chosen, or that the
// dataplane cannot express it.
func (p Port) schedulerLine() string {
	sc := p.Scheduling
	switch {
	case sc.Unsupported != "":
		return "scheduler NOT SUPPORTED: " + sc.Unsupported
	case sc.Chosen == "" && p.Scheduler == "":
		return ""
	case sc.Chosen == "":
		return "scheduler " + p.Scheduler + " (the dataplane's default)"
	case sc.Chosen != p.Scheduler:
		return fmt.Sprintf("scheduler %s (%s chose %s: every endpoint weighs the same)", p.Scheduler, sc.From, sc.Chosen)
	}
	return fmt.Sprintf("scheduler %s (%s)", p.Scheduler, sc.From)
}

// state is ready, serving-terminating, terminating or not ready.
func (e Endpoint) state() string {
	switch {
	case e.Ready:
		return "ready"
	case e.Serving && e.Terminating:
		return "terminating, serving"
	case e.Terminating:
		return "terminating"
	}
	return "not ready"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
