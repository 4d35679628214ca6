package nftables

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Path is one way through the rules (see dataplane.TracePath).
type Path = dataplane.TracePath

// Trace walks the first packet of a connection through the table, hook by
// hook, as the kernel would: filter and nat in prerouting (or output, for
// the node's own traffic), then input or forward, then postrouting. It
// knows only the rule shapes this package writes and fails on any other,
// so a new shape cannot slip past the tests. localAddrs are the node's
// addresses (for fib).
func Trace(rs *Ruleset, localAddrs []netip.Addr, pkt plan.Packet) ([]Path, error) {
	var paths []Path
	var explore func(prefix []int) error
	explore = func(prefix []int) error {
		w := &walker{rs: rs, local: localAddrs, forced: prefix}
		p, err := w.run(pkt)
		if err != nil {
			return err
		}
		paths = append(paths, p)
		for i := len(prefix); i < len(w.options); i++ {
			for alt := 1; alt < w.options[i]; alt++ {
				next := append(append([]int{}, w.chosen[:i]...), alt)
				if err := explore(next); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return paths, explore(nil)
}

// Decision sums up the paths of a trace as a plan decision.
func Decision(paths []Path) (plan.Decision, error) { return dataplane.Decide(paths) }

// walker follows one path; forced fixes the first random choices.
type walker struct {
	rs      *Ruleset
	local   []netip.Addr
	forced  []int
	options []int // how many alternatives each choice point had
	chosen  []int

	src, dst netip.Addr
	dport    uint16
	proto    string
	mark     uint32
	dnat     bool
	path     Path
	element  string // the map element the current rule matched, if any
}

const maxSteps = 1000

func (w *walker) run(pkt plan.Packet) (Path, error) {
	w.src, w.dst, w.dport, w.proto = pkt.Src, pkt.Dst.Addr(), pkt.Dst.Port(), strings.ToLower(string(pkt.Protocol))
	w.path.Action, w.path.Probability = plan.Pass, 1
	hooks := []string{"prerouting", "routing", "postrouting"}
	if pkt.FromHost {
		hooks = []string{"output", "postrouting"}
	}
	for _, hook := range hooks {
		if hook == "routing" {
			hook = "forward"
			if w.isLocal(w.dst) {
				hook = "input"
			}
		}
		if hook == "postrouting" && !pkt.FromHost && w.isLocal(w.dst) {
			break // delivered to the node itself
		}
		stop, err := w.hook(hook)
		if err != nil || stop {
			return w.path, err
		}
	}
	if w.dnat {
		w.path.Action = plan.Forward
		w.path.Endpoint = netip.AddrPortFrom(w.dst, w.dport)
	}
	return w.path, nil
}

func (w *walker) isLocal(a netip.Addr) bool { return slices.Contains(w.local, a) }

// hook runs the base chains of one hook in priority order; it reports
// whether the packet's fate is sealed (dropped or rejected).
func (w *walker) hook(hook string) (bool, error) {
	var chains []*RuleChain
	for _, c := range w.rs.Chains {
		if c.Hook == hook {
			chains = append(chains, c)
		}
	}
	sort.Slice(chains, func(i, j int) bool { return chains[i].Priority < chains[j].Priority })
	for _, c := range chains {
		v, err := w.chain(c.Name)
		if err != nil {
			return false, err
		}
		if v == "drop" || v == "reject" {
			w.path.Action = map[string]plan.Action{"drop": plan.Drop, "reject": plan.Reject}[v]
			return true, nil
		}
	}
	return false, nil
}

// chain evaluates a base chain with its jumps and gotos and returns the
// final verdict: "accept" (also for NAT done or falling off the end),
// "drop" or "reject".
func (w *walker) chain(base string) (string, error) {
	type frame struct {
		chain string
		rule  int
	}
	stack := []frame{{base, 0}}
	for steps := 0; len(stack) > 0; steps++ {
		if steps > maxSteps {
			return "", fmt.Errorf("trace: more than %d steps, a loop?", maxSteps)
		}
		top := &stack[len(stack)-1]
		c := w.rs.Chains[top.chain]
		if c == nil {
			return "", fmt.Errorf("trace: chain %q does not exist", top.chain)
		}
		if top.rule >= len(c.Rules) {
			stack = stack[:len(stack)-1]
			continue
		}
		rule := c.Rules[top.rule]
		top.rule++
		w.element = ""
		v, err := w.rule(rule)
		if err != nil {
			return "", fmt.Errorf("trace: chain %s: rule %q: %w", c.Name, rule, err)
		}
		if v == "" {
			continue
		}
		w.path.Steps = append(w.path.Steps, c.Name+": "+rule)
		if w.element != "" {
			w.path.Steps = append(w.path.Steps, w.element)
		}
		verb, target, _ := strings.Cut(v, " ")
		switch verb {
		case "jump":
			stack = append(stack, frame{target, 0})
		case "goto":
			stack[len(stack)-1] = frame{target, 0}
		case "return":
			stack = stack[:len(stack)-1]
		case "continue":
		default:
			return verb, nil
		}
	}
	return "accept", nil
}

var (
	reAddrSet   = regexp.MustCompile(`^(ip6?) (saddr|daddr) (!= )?\{ ([^}]*) \} `)
	reAddrOne   = regexp.MustCompile(`^(ip6?) (saddr|daddr) (!= )?([0-9a-fA-F:][0-9a-fA-F.:]*(/\d+)?) `)
	reAddrNamed = regexp.MustCompile(`^(ip6?) (saddr|daddr) @(\S+) `)
	rePairNamed = regexp.MustCompile(`^ip6? saddr \. ip6? daddr @(\S+) `)
	reFib       = regexp.MustCompile(`^fib (saddr|daddr) type local `)
	reProto     = regexp.MustCompile(`^meta l4proto (tcp|udp|sctp) `)
	reMarkTest  = regexp.MustCompile(`^meta mark & (0x[0-9a-f]+) == (0x[0-9a-f]+|[0-9]+) `)

	reVmapVIP   = regexp.MustCompile(`^ip6? daddr \. meta l4proto \. th dport vmap @(\S+)$`)
	reVmapPort  = regexp.MustCompile(`^meta l4proto \. th dport vmap @(\S+)$`)
	reMarkSet   = regexp.MustCompile(`^meta mark set meta mark (\||\^) (0x[0-9a-f]+)$`)
	reDnatOne   = regexp.MustCompile(`^dnat (?:ip6? )?to (\S+)$`)
	reNumgen    = regexp.MustCompile(`^numgen random mod (\d+) (?:== )?0 `)
	reProtoSet  = regexp.MustCompile(`^meta l4proto \{ ([a-z, ]+) \} `)
	reDnatMap   = regexp.MustCompile(`^dnat ip6? to (ip6? daddr \. )?(tcp|udp|sctp) dport \. numgen random mod (\d+) map @(\S+)$`)
	reUpdate    = regexp.MustCompile(`^update @(\S+) \{ ip6? saddr \}$`)
	reVerdict   = regexp.MustCompile(`^(jump|goto) (\S+)$`)
	reTerminals = regexp.MustCompile(`^(return|drop|reject|accept)$`)
)

// rule evaluates one rule. It returns "" when the rule does not match, a
// verdict ("jump X", "goto X", "return", "drop", "reject", "accept") when
// it decides, or "continue" when it matched and only changed state.
func (w *walker) rule(rule string) (string, error) {
	rest := rule + " "
	for {
		matched, n, err := w.match(rest)
		if err != nil {
			return "", err
		}
		if n == 0 {
			break
		}
		if !matched {
			return "", nil
		}
		rest = rest[n:]
	}
	return w.statement(strings.TrimSpace(rest))
}

// match evaluates the first match expression of s, returning whether it
// matched and how much of s it used (0: s starts with a statement).
func (w *walker) match(s string) (bool, int, error) {
	if strings.HasPrefix(s, "ct state new ") {
		return true, len("ct state new "), nil
	}
	if strings.HasPrefix(s, "ct status dnat ") {
		return w.dnat, len("ct status dnat "), nil
	}
	if m := rePairNamed.FindStringSubmatch(s); m != nil {
		set, err := w.set(m[1])
		return set[w.src.String()+" . "+w.dst.String()], len(m[0]), err
	}
	if m := reAddrNamed.FindStringSubmatch(s); m != nil {
		set, err := w.set(m[3])
		return set[w.addr(m[2]).String()], len(m[0]), err
	}
	if m := reAddrSet.FindStringSubmatch(s); m != nil {
		in, err := w.inPrefixes(w.addr(m[2]), strings.Split(m[4], ", "))
		return in != (m[3] != ""), len(m[0]), err
	}
	if m := reAddrOne.FindStringSubmatch(s); m != nil {
		in, err := w.inPrefixes(w.addr(m[2]), []string{m[4]})
		return in != (m[3] != ""), len(m[0]), err
	}
	if m := reFib.FindStringSubmatch(s); m != nil {
		return w.isLocal(w.addr(m[1])), len(m[0]), nil
	}
	if m := reProto.FindStringSubmatch(s); m != nil {
		return w.proto == m[1], len(m[0]), nil
	}
	if m := reNumgen.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		if n < 1 {
			return false, 0, fmt.Errorf("numgen modulus %d", n)
		}
		return w.choose(n), len(m[0]), nil
	}
	if m := reProtoSet.FindStringSubmatch(s); m != nil {
		return slices.Contains(strings.Split(m[1], ", "), w.proto), len(m[0]), nil
	}
	if m := reMarkTest.FindStringSubmatch(s); m != nil {
		mask, want := parseHex(m[1]), parseHex(m[2])
		return w.mark&mask == want, len(m[0]), nil
	}
	return false, 0, nil
}

func (w *walker) addr(which string) netip.Addr {
	if which == "saddr" {
		return w.src
	}
	return w.dst
}

func (w *walker) set(name string) (map[string]bool, error) {
	s, ok := w.rs.Sets[name]
	if !ok {
		return nil, fmt.Errorf("set %q does not exist", name)
	}
	if _, dynamic := w.rs.Timeouts[name]; dynamic {
		return nil, nil // affinity sets hold no entry for a new client
	}
	return s, nil
}

func (w *walker) inPrefixes(a netip.Addr, raw []string) (bool, error) {
	for _, r := range raw {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			addr, aerr := netip.ParseAddr(r)
			if aerr != nil {
				return false, fmt.Errorf("bad address %q", r)
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		if p.Contains(a) {
			return true, nil
		}
	}
	return false, nil
}

func (w *walker) statement(s string) (string, error) {
	if m := reVmapVIP.FindStringSubmatch(s); m != nil {
		return w.lookup(m[1], w.dst.String()+" . "+w.proto+" . "+strconv.Itoa(int(w.dport)))
	}
	if m := reVmapPort.FindStringSubmatch(s); m != nil {
		return w.lookup(m[1], w.proto+" . "+strconv.Itoa(int(w.dport)))
	}
	if m := reVerdict.FindStringSubmatch(s); m != nil {
		return s, nil
	}
	if m := reTerminals.FindStringSubmatch(s); m != nil {
		return s, nil
	}
	if m := reMarkSet.FindStringSubmatch(s); m != nil {
		if m[1] == "|" {
			w.mark |= parseHex(m[2])
		} else {
			w.mark ^= parseHex(m[2])
		}
		return "continue", nil
	}
	if s == "masquerade fully-random" || s == "masquerade" {
		w.path.Masquerade = true
		return "accept", nil
	}
	if m := reUpdate.FindStringSubmatch(s); m != nil {
		t, ok := w.rs.Timeouts[m[1]]
		if !ok {
			return "", fmt.Errorf("affinity set %q does not exist or has no timeout", m[1])
		}
		w.path.AffinitySeconds = t
		return "continue", nil
	}
	if m := reDnatOne.FindStringSubmatch(s); m != nil {
		return w.dnatTo(m[1])
	}
	if m := reDnatMap.FindStringSubmatch(s); m != nil {
		if m[2] != w.proto {
			return "", nil // "tcp dport" matches TCP packets only
		}
		return w.dnatFromMap(m[1] != "", m[3], m[4])
	}
	return "", fmt.Errorf("unknown rule shape %q", s)
}

// lookup finds key in a map and, when it is there, notes the element to
// show after the rule ("@service-ips: 10.96.0.11 . tcp . 80 : goto svc-...").
func (w *walker) lookup(name, key string) (string, error) {
	v, err := w.get(name, key)
	if v != "" {
		w.element = "  @" + name + ": " + key + " : " + v
	}
	return v, err
}

// get finds key in a map; "" when it is absent (the rule does not match).
func (w *walker) get(name, key string) (string, error) {
	m, ok := w.rs.Maps[name]
	if !ok {
		return "", fmt.Errorf("map %q does not exist", name)
	}
	return m[key], nil
}

// choose decides a random match that holds with probability 1/n: the
// forced outcome, or a match, remembering that there were two outcomes and
// the probability of the one taken.
func (w *walker) choose(n int) bool {
	c := 0
	if k := len(w.options); k < len(w.forced) {
		c = w.forced[k]
	}
	w.options, w.chosen = append(w.options, 2), append(w.chosen, c)
	if c == 0 {
		w.path.Probability /= float64(n)
		return true
	}
	w.path.Probability *= float64(n-1) / float64(n)
	return false
}

// dnatFromMap follows a shared-map balancing rule: a random index among n,
// looked up with the packet's destination; every index must be there.
func (w *walker) dnatFromMap(byIP bool, mod, name string) (string, error) {
	n, _ := strconv.Atoi(mod)
	if n < 1 {
		return "", fmt.Errorf("numgen modulus %d", n)
	}
	prefix := strconv.Itoa(int(w.dport)) + " . "
	if byIP {
		prefix = w.dst.String() + " . " + prefix
	}
	for i := 0; i < n; i++ {
		if _, err := w.lookupAll(name, prefix+strconv.Itoa(i)); err != nil {
			return "", err
		}
	}
	i := w.chooseIndex(n)
	v, _ := w.lookup(name, prefix+strconv.Itoa(i))
	return w.dnatTo(strings.Replace(v, " . ", ":", 1))
}

// chooseIndex draws one of n equally likely values: the forced one, or 0.
func (w *walker) chooseIndex(n int) int {
	c := 0
	if k := len(w.options); k < len(w.forced) {
		c = w.forced[k]
	}
	w.options, w.chosen = append(w.options, n), append(w.chosen, c)
	w.path.Probability /= float64(n)
	return c
}

// lookupAll looks up an element that must exist.
func (w *walker) lookupAll(name, key string) (string, error) {
	v, err := w.get(name, key)
	if err == nil && v == "" {
		err = fmt.Errorf("map %s has no element %s", name, key)
	}
	return v, err
}

func (w *walker) dnatTo(target string) (string, error) {
	target = strings.NewReplacer("[", "", "]", "").Replace(target)
	i := strings.LastIndex(target, ":")
	a, err := netip.ParseAddr(target[:max(i, 0)])
	port, perr := strconv.Atoi(target[i+1:])
	if i < 0 || err != nil || perr != nil {
		return "", fmt.Errorf("bad DNAT target %q", target)
	}
	w.dst, w.dport, w.dnat = a, uint16(port), true
	return "accept", nil
}

func parseHex(s string) uint32 {
	v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	return uint32(v)
}
