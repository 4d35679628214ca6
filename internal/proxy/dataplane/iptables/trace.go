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
// iptables-save tables (nat and filter) as the kernel would: nat
// PREROUTING (OUTPUT for the node's own traffic), filter INPUT or FORWARD
// (OUTPUT, then INPUT when the node talks to itself), nat POSTROUTING. It
// knows only the rule shapes this package writes and fails on any other.
// localAddrs are the node's addresses (addrtype LOCAL, with loopback).
func Trace(tables map[string]*Table, localAddrs []netip.Addr, pkt plan.Packet) ([]Path, error) {
	var paths []Path
	var explore func(prefix []bool) error
	explore = func(prefix []bool) error {
		w := &walker{tables: tables, local: localAddrs, forced: prefix, seconds: map[string]int32{}}
		p, err := w.run(pkt)
		if err != nil {
			return err
		}
		paths = append(paths, p)
		for i := len(prefix); i < len(w.chosen); i++ {
			next := append(slices.Clone(w.chosen[:i]), false)
			if err := explore(next); err != nil {
				return err
			}
		}
		return nil
	}
	return paths, explore(nil)
}

// Decision sums up the paths of a trace as a plan decision.
func Decision(paths []Path) (plan.Decision, error) { return dataplane.Decide(paths) }

type walker struct {
	tables  map[string]*Table
	local   []netip.Addr
	forced  []bool
	chosen  []bool
	seconds map[string]int32 // affinity timeouts seen in --rcheck rules

	fromHost bool
	src, dst netip.Addr
	dport    uint16
	proto    string
	mark     uint32
	dnat     bool
	path     Path
}

func (w *walker) run(pkt plan.Packet) (Path, error) {
	w.src, w.dst, w.dport, w.proto = pkt.Src, pkt.Dst.Addr(), pkt.Dst.Port(), strings.ToLower(string(pkt.Protocol))
	w.fromHost = pkt.FromHost
	w.path.Action, w.path.Probability = plan.Pass, 1
	hooks := []string{"nat PREROUTING", "filter route", "nat POSTROUTING"}
	if pkt.FromHost {
		hooks = []string{"nat OUTPUT", "filter OUTPUT", "filter route", "nat POSTROUTING"}
	}
	for _, h := range hooks {
		table, chain, _ := strings.Cut(h, " ")
		if chain == "route" {
			if !w.isLocal(w.dst) {
				if pkt.FromHost {
					continue
				}
				chain = "FORWARD"
			} else {
				chain = "INPUT"
			}
		}
		if chain == "POSTROUTING" && w.isLocal(w.dst) {
			break
		}
		v, err := w.chain(table, chain)
		if err != nil {
			return w.path, err
		}
		if v == "DROP" || v == "REJECT" {
			w.path.Action = map[string]plan.Action{"DROP": plan.Drop, "REJECT": plan.Reject}[v]
			return w.path, nil
		}
	}
	if w.dnat {
		w.path.Action, w.path.Endpoint = plan.Forward, netip.AddrPortFrom(w.dst, w.dport)
	}
	return w.path, nil
}

func (w *walker) isLocal(a netip.Addr) bool { return a.IsLoopback() || slices.Contains(w.local, a) }

// chain runs a built-in chain with its jumps and returns the verdict:
// ACCEPT (also for NAT done or falling off the end), DROP or REJECT.
func (w *walker) chain(table, base string) (string, error) {
	t := w.tables[table]
	if t == nil || t.Chains[base] == nil {
		return "ACCEPT", nil
	}
	type frame struct {
		chain string
		rule  int
	}
	stack := []frame{{base, 0}}
	for steps := 0; len(stack) > 0; steps++ {
		if steps > 10000 {
			return "", fmt.Errorf("trace: too many steps, a loop?")
		}
		top := &stack[len(stack)-1]
		c := t.Chains[top.chain]
		if c == nil {
			return "", fmt.Errorf("trace: %s chain %q does not exist", table, top.chain)
		}
		if top.rule >= len(c.Rules) {
			stack = stack[:len(stack)-1]
			continue
		}
		rule := c.Rules[top.rule]
		top.rule++
		v, err := w.rule(rule)
		if err != nil {
			return "", fmt.Errorf("trace: %s %s: rule %q: %w", table, c.Name, rule, err)
		}
		if v == "" {
			continue
		}
		w.path.Steps = append(w.path.Steps, table+" "+c.Name+": "+rule)
		switch v {
		case "continue":
		case "RETURN":
			stack = stack[:len(stack)-1]
		case "ACCEPT", "DROP", "REJECT":
			return v, nil
		default:
			stack = append(stack, frame{v, 0})
		}
	}
	return "ACCEPT", nil
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

// rule evaluates one rule: "" when it does not match, "continue" when it
// matched and only changed state, else the verdict or the chain to jump to.
func (w *walker) rule(rule string) (string, error) {
	tok, err := tokens(rule)
	if err != nil {
		return "", err
	}
	matched, prob := true, -1.0
	var recentName, recentOp string
	var recentSeconds int32
	next := func(i *int) (string, error) {
		*i++
		if *i >= len(tok) {
			return "", fmt.Errorf("missing value after %s", tok[*i-1])
		}
		return tok[*i], nil
	}
	neg := false
	for i := 0; i < len(tok); i++ {
		t := tok[i]
		var ok bool
		var v string
		hasCond := true
		switch t {
		case "!":
			neg = true
			continue
		case "-s", "-d":
			if v, err = next(&i); err != nil {
				return "", err
			}
			p, perr := netip.ParsePrefix(v)
			if perr != nil {
				return "", fmt.Errorf("bad address %q", v)
			}
			a := w.src
			if t == "-d" {
				a = w.dst
			}
			ok = p.Contains(a)
		case "-p":
			v, err = next(&i)
			ok = v == w.proto
		case "-m":
			v, err = next(&i)
			if !slices.Contains([]string{"comment", "tcp", "udp", "sctp", "addrtype", "statistic", "recent", "mark", "conntrack"}, v) {
				return "", fmt.Errorf("unknown match %q", v)
			}
			hasCond = false
		case "--comment", "--mask", "--name":
			v, err = next(&i)
			if t == "--name" {
				recentName = v
			}
			hasCond = false
		case "--rsource", "--reap":
			hasCond = false
		case "--dport":
			v, err = next(&i)
			ok = v == strconv.Itoa(int(w.dport))
		case "--dst-type", "--src-type":
			if v, err = next(&i); v != "LOCAL" {
				return "", fmt.Errorf("addrtype %q", v)
			}
			ok = w.isLocal(w.dst)
			if t == "--src-type" {
				ok = w.fromHost || w.isLocal(w.src)
			}
		case "--mode":
			if v, err = next(&i); v != "random" {
				return "", fmt.Errorf("statistic mode %q", v)
			}
			hasCond = false
		case "--probability":
			v, err = next(&i)
			if prob, err = strconv.ParseFloat(v, 64); err != nil || prob <= 0 || prob > 1 {
				return "", fmt.Errorf("bad probability %q", v)
			}
			hasCond = false
		case "--rcheck":
			recentOp, ok = t, false // a new client has no entry yet
		case "--seconds":
			v, err = next(&i)
			sec, _ := strconv.Atoi(v)
			recentSeconds = int32(sec)
			hasCond = false
		case "--set":
			recentOp, hasCond = t, false
		case "--mark":
			v, err = next(&i)
			val, mask, _ := strings.Cut(v, "/")
			ok = w.mark&parseHex(mask) == parseHex(val)
		case "--ctstate":
			v, err = next(&i)
			ok = slices.Contains(strings.Split(v, ","), "NEW") || (w.dnat && slices.Contains(strings.Split(v, ","), "DNAT"))
		case "-j":
			if v, err = next(&i); err != nil {
				return "", err
			}
			if recentOp == "--rcheck" {
				w.seconds[recentName] = recentSeconds
			}
			if !matched {
				return "", nil
			}
			if prob >= 0 && !w.choose(prob) {
				return "", nil
			}
			if recentOp == "--set" {
				sec, ok := w.seconds[recentName]
				if !ok {
					return "", fmt.Errorf("recent --set %s without an --rcheck giving its timeout", recentName)
				}
				w.path.AffinitySeconds = sec
			}
			return w.target(v, tok[i+1:])
		default:
			return "", fmt.Errorf("unknown option %q", t)
		}
		if err != nil {
			return "", err
		}
		if hasCond && ok == neg {
			matched = false
		}
		neg = false
	}
	return "", fmt.Errorf("no target")
}

func (w *walker) target(target string, args []string) (string, error) {
	arg := func(name string) string {
		if len(args) == 2 && args[0] == name {
			return args[1]
		}
		return ""
	}
	switch target {
	case "ACCEPT", "DROP", "REJECT", "RETURN":
		if r := arg("--reject-with"); target == "REJECT" && (r == "icmp-port-unreachable" || r == "icmp6-port-unreachable") {
			args = nil // the default, which iptables-save prints
		}
		if len(args) > 0 {
			return "", fmt.Errorf("unexpected %v", args)
		}
		return target, nil
	case "MARK":
		if v := arg("--or-mark"); v != "" {
			w.mark |= parseHex(v)
		} else if v := arg("--xor-mark"); v != "" {
			w.mark ^= parseHex(v)
		} else if v, m, ok := strings.Cut(arg("--set-xmark"), "/"); ok {
			// How iptables-save prints both: --or-mark X is X/X,
			// --xor-mark X is X/0.
			w.mark = w.mark&^parseHex(m) ^ parseHex(v)
		} else {
			return "", fmt.Errorf("MARK %v", args)
		}
		return "continue", nil
	case "MASQUERADE":
		w.path.Masquerade = true
		return "ACCEPT", nil
	case "DNAT":
		ap, err := netip.ParseAddrPort(arg("--to-destination"))
		if err != nil {
			return "", fmt.Errorf("DNAT %v", args)
		}
		w.dst, w.dport, w.dnat = ap.Addr(), ap.Port(), true
		return "ACCEPT", nil
	}
	if len(args) > 0 || !strings.HasPrefix(target, "KUBE-") {
		return "", fmt.Errorf("unknown target %s %v", target, args)
	}
	return target, nil
}

// choose takes a random match of probability p: the forced outcome, or a
// match, remembering the choice and its probability.
func (w *walker) choose(p float64) bool {
	c := true
	if k := len(w.chosen); k < len(w.forced) {
		c = w.forced[k]
	}
	w.chosen = append(w.chosen, c)
	if c {
		w.path.Probability *= p
	} else {
		w.path.Probability *= 1 - p
	}
	return c
}

func parseHex(s string) uint32 {
	v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	return uint32(v)
}
