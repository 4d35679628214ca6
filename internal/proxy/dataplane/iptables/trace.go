package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Path is one way through the rules (see dataplane.TracePath).
type Path = dataplane.TracePath

// Trace walks the first packet of a connection through parsed
// iptables-save tables (nat and filter) with the dataplane package's
// tracer. Chains are named "<table> <chain>"; a hook runs nat before
// filter. Eval knows only the rule shapes this package writes and fails
// on any other. localAddrs are the node's addresses (addrtype LOCAL, with
// loopback).
func Trace(tables map[string]*Table, localAddrs []netip.Addr, pkt plan.Packet) ([]Path, error) {
	return dataplane.Trace(newTableRules(tables), localAddrs, pkt)
}

// Decision sums up the paths of a trace as a plan decision.
func Decision(paths []Path) (plan.Decision, error) { return dataplane.Decide(paths) }

// tableRules are the tables as the tracer reads them.
type tableRules struct {
	tables map[string]*Table
	// seconds are the affinity timeouts of the recent lists, from the
	// "--rcheck --seconds N --name X" rules that check them.
	seconds map[string]int32
}

// hookChains are the built-in chains each hook runs, in order.
var hookChains = map[dataplane.Hook][]string{
	dataplane.Prerouting:  {"nat PREROUTING"},
	dataplane.Input:       {"filter INPUT"},
	dataplane.Forward:     {"filter FORWARD"},
	dataplane.Output:      {"nat OUTPUT", "filter OUTPUT"},
	dataplane.Postrouting: {"nat POSTROUTING"},
}

func newTableRules(tables map[string]*Table) tableRules {
	r := tableRules{tables: tables, seconds: map[string]int32{}}
	for _, t := range tables {
		for _, c := range t.Chains {
			for _, rule := range c.Rules {
				if tok, err := tokens(rule); err == nil && slices.Contains(tok, "--rcheck") {
					sec, _ := strconv.Atoi(after(tok, "--seconds"))
					r.seconds[after(tok, "--name")] = int32(sec)
				}
			}
		}
	}
	return r
}

// after returns the token after name, or "".
func after(tok []string, name string) string {
	if i := slices.Index(tok, name); i >= 0 && i+1 < len(tok) {
		return tok[i+1]
	}
	return ""
}

func (r tableRules) Hook(h dataplane.Hook) []string {
	var out []string
	for _, c := range hookChains[h] {
		if _, ok := r.Chain(c); ok {
			out = append(out, c)
		}
	}
	return out
}

func (r tableRules) Chain(name string) ([]string, bool) {
	table, chain, _ := strings.Cut(name, " ")
	t := r.tables[table]
	if t == nil || t.Chains[chain] == nil {
		return nil, false
	}
	return t.Chains[chain].Rules, true
}

// Eval evaluates one rule: its matches, left to right (a "!" negates the
// next), then its target.
func (r tableRules) Eval(w *dataplane.Walk, chain string, i int) (dataplane.Verdict, error) {
	rules, _ := r.Chain(chain)
	tok, err := tokens(rules[i])
	if err != nil {
		return dataplane.Verdict{}, err
	}
	table, _, _ := strings.Cut(chain, " ")
	e := &ruleEval{w: w, tok: tok, matched: true, prob: -1}
	for ; e.i < len(tok); e.i++ {
		switch t := tok[e.i]; t {
		case "!":
			e.neg = true
			continue
		case "-j":
			target, err := e.value()
			if err != nil {
				return dataplane.Verdict{}, err
			}
			return e.jump(r, table, target, tok[e.i+1:])
		default:
			if err := e.option(t); err != nil {
				return dataplane.Verdict{}, err
			}
		}
		e.neg = false
	}
	return dataplane.Verdict{}, fmt.Errorf("no target")
}

// ruleEval is one rule's evaluation.
type ruleEval struct {
	w       *dataplane.Walk
	tok     []string
	i       int
	neg     bool
	matched bool
	prob    float64 // of a statistic match; -1: none
	every   int     // of a statistic nth match (round robin); 0: none
	recent  string  // "--rcheck" or "--set"
	name    string  // of the recent list
}

// value returns the token after the current one.
func (e *ruleEval) value() (string, error) {
	e.i++
	if e.i >= len(e.tok) {
		return "", fmt.Errorf("missing value after %s", e.tok[e.i-1])
	}
	return e.tok[e.i], nil
}

// cond records the outcome of a match, negated after "!".
func (e *ruleEval) cond(ok bool) {
	if ok == e.neg {
		e.matched = false
	}
}

// option evaluates one option: a match, or a parameter of one.
func (e *ruleEval) option(t string) error {
	switch t {
	case "-s", "-d", "-p", "--dport", "--dst-type", "--src-type", "--mark", "--ctstate":
		v, err := e.value()
		if err != nil {
			return err
		}
		return e.match(t, v)
	case "--rcheck":
		e.recent = t
		e.cond(false) // a new client has no entry yet
	case "--set":
		e.recent = t
	case "--rsource", "--reap":
	case "-m", "--comment", "--mask", "--name", "--mode", "--probability", "--seconds", "--every", "--packet":
		v, err := e.value()
		if err != nil {
			return err
		}
		return e.parameter(t, v)
	default:
		return fmt.Errorf("unknown option %q", t)
	}
	return nil
}

// match evaluates a match option with its value.
func (e *ruleEval) match(t, v string) error {
	w := e.w
	switch t {
	case "-s", "-d":
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return fmt.Errorf("bad address %q", v)
		}
		e.cond(p.Contains(map[bool]netip.Addr{true: w.Src, false: w.Dst}[t == "-s"]))
	case "-p":
		e.cond(v == w.Proto)
	case "--dport":
		e.cond(v == strconv.Itoa(int(w.DPort)))
	case "--dst-type", "--src-type":
		if v != "LOCAL" {
			return fmt.Errorf("addrtype %q", v)
		}
		e.cond(map[bool]bool{true: w.FromLocal(), false: w.IsLocal(w.Dst)}[t == "--src-type"])
	case "--mark":
		val, mask, _ := strings.Cut(v, "/")
		e.cond(w.Mark&parseHex(mask) == parseHex(val))
	case "--ctstate":
		states := strings.Split(v, ",")
		e.cond(slices.Contains(states, "NEW") || (w.DNATed && slices.Contains(states, "DNAT")))
	}
	return nil
}

// parameter takes an option that is no condition of its own.
func (e *ruleEval) parameter(t, v string) error {
	switch t {
	case "-m":
		if !slices.Contains([]string{"comment", "tcp", "udp", "sctp", "addrtype", "statistic", "recent", "mark", "conntrack"}, v) {
			return fmt.Errorf("unknown match %q", v)
		}
	case "--mode":
		if v != "random" && v != "nth" {
			return fmt.Errorf("statistic mode %q", v)
		}
	case "--every":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("bad --every %q", v)
		}
		e.every = n
	case "--packet":
		if v != "0" {
			return fmt.Errorf("statistic --packet %q", v)
		}
	case "--probability":
		p, err := strconv.ParseFloat(v, 64)
		if err != nil || p <= 0 || p > 1 {
			return fmt.Errorf("bad probability %q", v)
		}
		e.prob = p
	case "--name":
		e.name = v
	}
	return nil
}

// jump applies the target of a rule whose matches held: a statistic match
// draws its chance first, a recent --set pins the client.
func (e *ruleEval) jump(r tableRules, table, target string, args []string) (dataplane.Verdict, error) {
	if !e.matched || e.prob >= 0 && !e.w.Chance(e.prob) || e.every > 0 && !e.w.Turn(e.every, "rr") {
		return dataplane.Verdict{}, nil
	}
	if e.recent == "--set" {
		sec, ok := r.seconds[e.name]
		if !ok {
			return dataplane.Verdict{}, fmt.Errorf("recent --set %s without an --rcheck giving its timeout", e.name)
		}
		e.w.Pin(sec)
	}
	return e.target(table, target, args)
}

// target does what a rule's target does.
func (e *ruleEval) target(table, target string, args []string) (dataplane.Verdict, error) {
	arg := func(name string) string {
		if len(args) == 2 && args[0] == name {
			return args[1]
		}
		return ""
	}
	kinds := map[string]dataplane.VerdictKind{"ACCEPT": dataplane.Accept, "DROP": dataplane.Drop, "REJECT": dataplane.Reject, "RETURN": dataplane.Return}
	switch target {
	case "ACCEPT", "DROP", "REJECT", "RETURN":
		if r := arg("--reject-with"); target == "REJECT" && (r == "icmp-port-unreachable" || r == "icmp6-port-unreachable") {
			args = nil // the default, which iptables-save prints
		}
		if len(args) > 0 {
			return dataplane.Verdict{}, fmt.Errorf("unexpected %v", args)
		}
		return dataplane.Verdict{Kind: kinds[target]}, nil
	case "MARK":
		return e.mark(args, arg)
	case "MASQUERADE":
		e.w.Masquerade()
		return dataplane.Verdict{Kind: dataplane.Accept}, nil
	case "DNAT":
		ap, err := netip.ParseAddrPort(arg("--to-destination"))
		if err != nil {
			return dataplane.Verdict{}, fmt.Errorf("DNAT %v", args)
		}
		e.w.DNAT(ap)
		return dataplane.Verdict{Kind: dataplane.Accept}, nil
	}
	if len(args) > 0 || !strings.HasPrefix(target, "KUBE-") {
		return dataplane.Verdict{}, fmt.Errorf("unknown target %s %v", target, args)
	}
	return dataplane.Verdict{Kind: dataplane.Jump, Chain: table + " " + target}, nil
}

// mark applies a MARK target.
func (e *ruleEval) mark(args []string, arg func(string) string) (dataplane.Verdict, error) {
	w := e.w
	if v := arg("--or-mark"); v != "" {
		w.Mark |= parseHex(v)
	} else if v := arg("--xor-mark"); v != "" {
		w.Mark ^= parseHex(v)
	} else if v, m, ok := strings.Cut(arg("--set-xmark"), "/"); ok {
		// How iptables-save prints both: --or-mark X is X/X,
		// --xor-mark X is X/0.
		w.Mark = w.Mark&^parseHex(m) ^ parseHex(v)
	} else {
		return dataplane.Verdict{}, fmt.Errorf("MARK %v", args)
	}
	return dataplane.Verdict{Kind: dataplane.Continue}, nil
}

// tokens splits a rule, keeping quoted strings whole.
func tokens(rule string) ([]string, error) {
	var out []string
	for s := strings.TrimSpace(rule); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote")
			}
			out, s = append(out, s[1:end+1]), s[end+2:]
			continue
		}
		tok, rest, _ := strings.Cut(s, " ")
		out, s = append(out, tok), rest
	}
	return out, nil
}

func parseHex(s string) uint32 {
	v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	return uint32(v)
}
