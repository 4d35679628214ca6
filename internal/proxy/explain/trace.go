package explain

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/ipvs"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Result is what `svcproxy trace` shows.
type Result struct {
	Packet string `json:"packet"`
	Mode   string `json:"mode"`
	// Paths are the ways through the kernel's rules, one per random
	// choice, each with the rules that matched in order.
	Paths []Path `json:"paths"`
	// Kernel is the verdict of the rules; Plan is what the agent's plan
	// says, with the reason.
	Kernel Verdict `json:"kernel"`
	Plan   Verdict `json:"plan"`
	// Problems lists how the kernel's rules disagree with the plan; empty
	// when they agree.
	Problems []string `json:"problems,omitempty"`

	client string // the packet's source, for the hairpin wording
}

// Path is one way through the rules.
type Path struct {
	Probability     float64  `json:"probability"`
	Steps           []string `json:"steps"`
	Action          string   `json:"action"`
	Endpoint        string   `json:"endpoint,omitempty"`
	Masquerade      bool     `json:"masquerade"`
	AffinitySeconds int32    `json:"affinitySeconds,omitempty"`
	// Predicted: the tracer knows the packet takes this path (the
	// endpoint a source hash gives its source).
	Predicted bool `json:"predicted,omitempty"`
}

// Verdict is a decision in words.
type Verdict struct {
	Action          string   `json:"action"`
	Service         string   `json:"service,omitempty"`
	Endpoints       []string `json:"endpoints,omitempty"`
	Masqueraded     []string `json:"masqueraded,omitempty"`
	AffinitySeconds int32    `json:"affinitySeconds,omitempty"`
	Scheduler       string   `json:"scheduler,omitempty"`
	Reason          string   `json:"reason,omitempty"`
}

// Runner runs a command on the node (in its network namespace) and returns
// its output.
type Runner func(ctx context.Context, argv ...string) (string, error)

// Kernel reads what a node's kernel holds: Run runs commands there (nft,
// iptables-save), IPVS reads its IPVS virtual servers, kube-ipvs0
// addresses and ipsets over netlink.
type Kernel struct {
	Run  Runner
	IPVS func(context.Context) (ipvs.State, error)
}

// Trace reads the rules of mode from the node's kernel, walks pkt through
// them, and checks the outcome against the plan's decision. localAddrs
// are the node's addresses.
func Trace(ctx context.Context, mode string, k Kernel, localAddrs []netip.Addr, pkt plan.Packet, planned plan.Decision) (*Result, error) {
	var paths []Path
	var got plan.Decision
	var err error
	switch mode {
	case "nftables":
		paths, got, err = traceNft(ctx, k.Run, localAddrs, pkt)
	case "iptables":
		paths, got, err = traceIpt(ctx, k.Run, localAddrs, pkt)
	case "ipvs":
		paths, got, err = traceIPVS(ctx, k, localAddrs, pkt)
	default:
		return nil, fmt.Errorf("trace: proxy mode %q has no tracer", mode)
	}
	if err != nil {
		return nil, err
	}
	return &Result{
		Packet: describe(pkt), Mode: mode, Paths: paths, client: pkt.Src.String(),
		Kernel: verdictOf(got), Plan: verdictOf(planned),
		Problems: plan.DiffDecisions(planned, got),
	}, nil
}

// traceNft walks the nftables table of the packet's family.
func traceNft(ctx context.Context, run Runner, local []netip.Addr, pkt plan.Packet) ([]Path, plan.Decision, error) {
	family := "ip"
	if pkt.Src.Is6() {
		family = "ip6"
	}
	out, err := run(ctx, "nft", "list", "table", family, nftables.DefaultTable)
	if err != nil {
		return nil, plan.Decision{}, err
	}
	rs, err := nftables.RulesetFromListing(out)
	if err != nil {
		return nil, plan.Decision{}, err
	}
	return summarize(nftables.Trace(rs, local, pkt))
}

// traceIpt walks iptables-save's nat and filter tables.
func traceIpt(ctx context.Context, run Runner, local []netip.Addr, pkt plan.Packet) ([]Path, plan.Decision, error) {
	save := "iptables-save"
	if pkt.Src.Is6() {
		save = "ip6tables-save"
	}
	out, err := run(ctx, save)
	if err != nil {
		return nil, plan.Decision{}, err
	}
	return summarize(iptables.Trace(iptables.ParseSave(out), local, pkt))
}

// traceIPVS walks the IPVS glue (iptables-save of the packet's family)
// and the virtual servers, addresses and sets read over netlink.
func traceIPVS(ctx context.Context, k Kernel, local []netip.Addr, pkt plan.Packet) ([]Path, plan.Decision, error) {
	save := "iptables-save"
	if pkt.Src.Is6() {
		save = "ip6tables-save"
	}
	out, err := k.Run(ctx, save)
	if err != nil {
		return nil, plan.Decision{}, err
	}
	state, err := k.IPVS(ctx)
	if err != nil {
		return nil, plan.Decision{}, fmt.Errorf("reading IPVS over netlink: %w", err)
	}
	return summarize(ipvs.Trace(state, iptables.ParseSave(out), local, pkt))
}

// summarize turns a tracer's paths into ours and their decision.
func summarize(raw []dataplane.TracePath, err error) ([]Path, plan.Decision, error) {
	if err != nil {
		return nil, plan.Decision{}, err
	}
	var paths []Path
	for _, p := range raw {
		paths = append(paths, Path{p.Probability, p.Steps, string(p.Action), addrPort(p.Endpoint), p.Masquerade, p.AffinitySeconds, p.Predicted})
	}
	d, err := dataplane.Decide(raw)
	return paths, d, err
}

func addrPort(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func verdictOf(d plan.Decision) Verdict {
	v := Verdict{Action: string(d.Action), AffinitySeconds: d.AffinitySeconds, Scheduler: d.Scheduler, Reason: d.Reason}
	if d.Service.Name != "" {
		v.Service = d.Service.Namespace + "/" + d.Service.Name
		if d.Service.Port != "" {
			v.Service += ":" + d.Service.Port
		}
	}
	for _, t := range d.Targets {
		v.Endpoints = append(v.Endpoints, t.Endpoint.String())
		if t.Masquerade {
			v.Masqueraded = append(v.Masqueraded, t.Endpoint.String())
		}
	}
	return v
}

func describe(pkt plan.Packet) string {
	from := pkt.Src.String()
	if pkt.FromHost {
		from += " (this node)"
	}
	return fmt.Sprintf("%s %s -> %s", strings.ToLower(string(pkt.Protocol)), from, pkt.Dst)
}

// Write prints the trace: each path's rules, then the verdicts.
func (r *Result) Write(w io.Writer) {
	fmt.Fprintf(w, "%s, through the %s rules in this node's kernel:\n", r.Packet, r.Mode)
	for i, p := range r.Paths {
		fmt.Fprintf(w, "\npath %d of %d (probability %.3f):\n", i+1, len(r.Paths), p.Probability)
		for _, s := range p.Steps {
			fmt.Fprintf(w, "  %s\n", s)
		}
		fmt.Fprintf(w, "  => %s", p.Action)
		if p.Endpoint != "" {
			fmt.Fprintf(w, " to %s", p.Endpoint)
		}
		if p.Masquerade {
			fmt.Fprint(w, ", masqueraded (the endpoint sees this node's address)")
		}
		if p.AffinitySeconds != 0 {
			fmt.Fprintf(w, ", client pinned for %ds", p.AffinitySeconds)
		}
		if p.Predicted {
			fmt.Fprint(w, " <- this path: the source hash of "+r.client)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nverdict: %s\n", r.Kernel.words(r.client))
	fmt.Fprintf(w, "plan:    %s\n", r.Plan.words(r.client))
	if r.Plan.Reason != "" {
		fmt.Fprintf(w, "why:     %s\n", r.Plan.Reason)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "ERROR: the kernel's rules disagree with the plan: %s\n", strings.Join(r.Problems, "; "))
	}
}

// words says a verdict in one line; client is the packet's source.
func (v Verdict) words(client string) string {
	s := v.Action
	if v.Service != "" {
		s += " (" + v.Service + ")"
	}
	if len(v.Endpoints) > 0 {
		s += fmt.Sprintf(" to one of %d endpoints, %s: %s", len(v.Endpoints), spread(v.Scheduler, len(v.Endpoints), client), strings.Join(v.Endpoints, ", "))
	}
	switch {
	case len(v.Masqueraded) > 0 && len(v.Masqueraded) == len(v.Endpoints):
		s += "; masqueraded"
	case len(v.Masqueraded) == 1 && addrOf(v.Masqueraded[0]) == client:
		s += "; masqueraded only when it picks " + v.Masqueraded[0] + ", the client itself (hairpin), which would not take a reply from itself"
	case len(v.Masqueraded) > 0:
		s += "; masqueraded to " + strings.Join(v.Masqueraded, ", ")
	case len(v.Endpoints) > 0:
		s += "; the endpoint sees the client's address"
	}
	return s
}

// addrOf is the address of an "ip:port" endpoint.
func addrOf(endpoint string) string {
	ap, err := netip.ParseAddrPort(endpoint)
	if err != nil {
		return ""
	}
	return ap.Addr().String()
}

// spread says how a scheduler picks one of n endpoints for client.
func spread(scheduler string, n int, client string) string {
	switch scheduler {
	case "":
		return fmt.Sprintf("each %.0f%%", 100/float64(n))
	case "rr":
		return "in turn (round robin)"
	case "sh":
		return "by source hash (every connection from " + client + " to the same one)"
	}
	return "by the " + scheduler + " scheduler"
}
