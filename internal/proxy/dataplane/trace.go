package dataplane

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// The tracer skeleton: every dataplane's tracer walks the first packet of
// a connection through the hooks of the kernel and through its chains with
// this code. A dataplane supplies only its Rules: which chains a hook runs,
// the rules of a chain, and what one rule matches and does (Eval). Random
// choices (a probability match, a random index) fork the walk; Trace
// explores every path. A scheduler's choice (round robin, source hash)
// forks the walk the same way, each candidate taking an equal share of
// connections, and the paths say which scheduler chose.

// Hook is a netfilter hook.
type Hook string

// The hooks a packet meets.
const (
	Prerouting  Hook = "prerouting"
	Input       Hook = "input"
	Forward     Hook = "forward"
	Output      Hook = "output"
	Postrouting Hook = "postrouting"
)

// Rules is what a tracer reads of a dataplane's rules.
type Rules interface {
	// Hook returns the chains a hook runs, in the order it runs them.
	Hook(h Hook) []string
	// Chain returns a chain's rules, each as it is shown in a path's
	// steps; false when the chain does not exist.
	Chain(name string) ([]string, bool)
	// Eval says what rule i of chain does to the packet w walks. It may
	// change the packet (mark, DNAT, masquerade, affinity) and draw random
	// choices from w. It must fail on a rule shape it does not know, so a
	// new shape cannot slip past the tests.
	Eval(w *Walk, chain string, i int) (Verdict, error)
}

// VerdictKind is what a rule decides.
type VerdictKind uint8

// The verdicts.
const (
	NoMatch  VerdictKind = iota // the rule does not match: next rule
	Continue                    // matched and changed the packet: next rule
	Jump                        // to Verdict.Chain, then back
	Goto                        // to Verdict.Chain, not back
	Return                      // back to the calling chain
	Accept                      // this chain is done with the packet (also after NAT)
	Drop
	Reject
)

// Verdict is what one rule does.
type Verdict struct {
	Kind  VerdictKind
	Chain string // Jump and Goto
	// Note, when set, is shown as a step after the rule (the map element
	// it matched, say).
	Note string
}

// TracePath is one way a packet can go through a dataplane's rules, as its
// tracer walks them: every rule that matched, and where it ended. A random
// endpoint choice forks the trace, one path per candidate.
type TracePath struct {
	Steps           []string
	Action          plan.Action
	Endpoint        netip.AddrPort // after DNAT
	Masquerade      bool
	AffinitySeconds int32
	// Scheduler is the scheduler that chose the endpoint ("rr", "sh"), ""
	// for a random choice.
	Scheduler string
	// Predicted says the tracer knows this path is the one the packet
	// takes: the endpoint a source hash gives this packet's source.
	Predicted   bool
	Probability float64 // of this path among all
}

// Walk is one path in progress: the packet as the rules have changed it,
// and the random choices made so far.
type Walk struct {
	Src, Dst netip.Addr
	DPort    uint16
	Proto    string // "tcp", "udp" or "sctp"
	FromHost bool   // sent by the node itself
	Mark     uint32
	DNATed   bool

	local   []netip.Addr
	forced  []int // the first choices, fixed by the exploration
	options []int // how many alternatives each choice had
	chosen  []int
	path    TracePath
}

// maxSteps bounds a walk: a loop between chains is an error, not a hang.
const maxSteps = 10000

// Trace walks pkt through rules on every path its random choices allow.
// localAddrs are the node's addresses (loopback ones are local too).
func Trace(rules Rules, localAddrs []netip.Addr, pkt plan.Packet) ([]TracePath, error) {
	var paths []TracePath
	var explore func(prefix []int) error
	explore = func(prefix []int) error {
		w := &Walk{local: localAddrs, forced: prefix}
		p, err := w.run(rules, pkt)
		if err != nil {
			return err
		}
		paths = append(paths, p)
		for i := len(prefix); i < len(w.options); i++ {
			for alt := 1; alt < w.options[i]; alt++ {
				if err := explore(append(slices.Clone(w.chosen[:i]), alt)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return paths, explore(nil)
}

// run walks the hooks as the kernel passes them: from the network,
// prerouting, then input (to a local address, after DNAT) or forward and
// postrouting; from the node itself, output, postrouting and, to a local
// address, input. A drop or reject ends the walk.
func (w *Walk) run(rules Rules, pkt plan.Packet) (TracePath, error) {
	w.Src, w.Dst, w.DPort, w.Proto, w.FromHost = pkt.Src, pkt.Dst.Addr(), pkt.Dst.Port(), strings.ToLower(string(pkt.Protocol)), pkt.FromHost
	w.path.Action, w.path.Probability = plan.Pass, 1
	hooks := []Hook{Prerouting, Forward, Postrouting}
	if pkt.FromHost {
		hooks = []Hook{Output, Postrouting, Input}
	}
	for _, h := range hooks {
		local := w.IsLocal(w.Dst)
		switch {
		case h == Forward && local:
			h = Input
		case h == Postrouting && local && !pkt.FromHost, h == Input && !local:
			continue
		}
		if sealed, err := w.hook(rules, h); sealed || err != nil {
			return w.path, err
		}
	}
	if w.DNATed {
		w.path.Action, w.path.Endpoint = plan.Forward, netip.AddrPortFrom(w.Dst, w.DPort)
	}
	return w.path, nil
}

// hook runs the chains of one hook; it reports whether the packet's fate
// is sealed (dropped or rejected).
func (w *Walk) hook(rules Rules, h Hook) (bool, error) {
	for _, c := range rules.Hook(h) {
		v, err := w.chain(rules, c)
		if err != nil {
			return false, err
		}
		if v == Drop || v == Reject {
			w.path.Action = map[VerdictKind]plan.Action{Drop: plan.Drop, Reject: plan.Reject}[v]
			return true, nil
		}
	}
	return false, nil
}

// chain runs a hook's chain with its jumps and gotos and returns the final
// verdict: Accept (also for falling off the end), Drop or Reject.
func (w *Walk) chain(rules Rules, base string) (VerdictKind, error) {
	type frame struct {
		chain string
		rule  int
	}
	stack := []frame{{base, 0}}
	for steps := 0; len(stack) > 0; steps++ {
		if steps > maxSteps {
			return 0, fmt.Errorf("trace: more than %d steps, a loop?", maxSteps)
		}
		top := &stack[len(stack)-1]
		rs, ok := rules.Chain(top.chain)
		if !ok {
			return 0, fmt.Errorf("trace: chain %q does not exist", top.chain)
		}
		if top.rule >= len(rs) {
			stack = stack[:len(stack)-1]
			continue
		}
		i := top.rule
		top.rule++
		v, err := rules.Eval(w, top.chain, i)
		if err != nil {
			return 0, fmt.Errorf("trace: chain %s: rule %q: %w", top.chain, rs[i], err)
		}
		if v.Kind == NoMatch {
			continue
		}
		w.path.Steps = append(w.path.Steps, top.chain+": "+rs[i])
		if v.Note != "" {
			w.path.Steps = append(w.path.Steps, v.Note)
		}
		switch v.Kind {
		case Jump:
			stack = append(stack, frame{v.Chain, 0})
		case Goto:
			stack[len(stack)-1] = frame{v.Chain, 0}
		case Return:
			stack = stack[:len(stack)-1]
		case Accept, Drop, Reject:
			return v.Kind, nil
		}
	}
	return Accept, nil
}

// IsLocal reports whether a is one of the node's addresses.
func (w *Walk) IsLocal(a netip.Addr) bool { return a.IsLoopback() || slices.Contains(w.local, a) }

// FromLocal reports whether the packet's source is the node's own: it
// was sent by the node, or carries one of its addresses.
func (w *Walk) FromLocal() bool { return w.FromHost || w.IsLocal(w.Src) }

// Chance decides a random match that holds with probability p: the forced
// outcome, or a match, remembering the other.
func (w *Walk) Chance(p float64) bool {
	return w.choose([]float64{p, 1 - p}) == 0
}

// Choose draws one of n equally likely values: the forced one, or 0.
func (w *Walk) Choose(n int) int {
	probs := make([]float64, n)
	for i := range probs {
		probs[i] = 1 / float64(n)
	}
	return w.choose(probs)
}

// Schedule draws one of n candidates as a scheduler does: each takes an
// equal share of new connections (a turn of round robin, a share of the
// source-hash space), and the path records the scheduler. predicted is
// the candidate the tracer knows this packet gets (a source hash it can
// compute), or -1.
func (w *Walk) Schedule(n int, scheduler string, predicted int) int {
	w.path.Scheduler = scheduler
	i := w.Choose(n)
	w.path.Predicted = i == predicted
	return i
}

// Turn decides a match that holds for one new connection in every n that
// reach it (a round-robin cascade: iptables' statistic nth): it forks as
// Chance(1/n) does, and the path records the scheduler.
func (w *Walk) Turn(n int, scheduler string) bool {
	w.path.Scheduler = scheduler
	return n == 1 || w.Chance(1/float64(n))
}

func (w *Walk) choose(probs []float64) int {
	c := 0
	if k := len(w.options); k < len(w.forced) {
		c = w.forced[k]
	}
	w.options, w.chosen = append(w.options, len(probs)), append(w.chosen, c)
	w.path.Probability *= probs[c]
	return c
}

// DNAT sends the packet to a new destination.
func (w *Walk) DNAT(to netip.AddrPort) {
	w.Dst, w.DPort, w.DNATed = to.Addr(), to.Port(), true
}

// Masquerade records that the packet leaves with the node's address.
func (w *Walk) Masquerade() { w.path.Masquerade = true }

// Pin records that the client is pinned to its endpoint for seconds.
func (w *Walk) Pin(seconds int32) { w.path.AffinitySeconds = seconds }

// probabilityTolerance absorbs the kernel's rounding of iptables'
// `statistic --probability` (11 decimal places).
const probabilityTolerance = 1e-6

// Decide sums up the paths of a trace as a plan decision, so that it can be
// compared with the plan's own. The paths must agree on the action and be
// equally likely: the plan promises a uniform choice.
func Decide(paths []TracePath) (plan.Decision, error) {
	if len(paths) == 0 {
		return plan.Decision{}, fmt.Errorf("no path")
	}
	d := plan.Decision{Action: paths[0].Action, AffinitySeconds: paths[0].AffinitySeconds, Scheduler: paths[0].Scheduler}
	for _, p := range paths {
		if p.Action != d.Action {
			return d, fmt.Errorf("paths disagree: %s and %s", d.Action, p.Action)
		}
		if p.Scheduler != d.Scheduler {
			return d, fmt.Errorf("paths disagree on the scheduler: %q and %q", d.Scheduler, p.Scheduler)
		}
		if math.Abs(p.Probability-1/float64(len(paths))) > probabilityTolerance {
			return d, fmt.Errorf("path to %s has probability %.6f, not 1/%d", p.Endpoint, p.Probability, len(paths))
		}
		if p.Action == plan.Forward {
			d.Targets = append(d.Targets, plan.Target{Endpoint: p.Endpoint, Masquerade: p.Masquerade})
		}
	}
	slices.SortFunc(d.Targets, func(a, b plan.Target) int { return a.Endpoint.Compare(b.Endpoint) })
	return d, nil
}
