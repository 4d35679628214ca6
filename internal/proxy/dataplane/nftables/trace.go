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

// Trace walks the first packet of a connection through the table with the
// dataplane package's tracer: the base chains of each hook in priority
// order, and this package's rules as Eval reads them. Eval knows only the
// rule shapes this package writes and fails on any other, so a new shape
// cannot slip past the tests. localAddrs are the node's addresses (for
// fib).
func Trace(rs *Ruleset, localAddrs []netip.Addr, pkt plan.Packet) ([]Path, error) {
	return dataplane.Trace(tableRules{rs}, localAddrs, pkt)
}

// Decision sums up the paths of a trace as a plan decision.
func Decision(paths []Path) (plan.Decision, error) { return dataplane.Decide(paths) }

// tableRules is a Ruleset as the tracer reads it.
type tableRules struct{ rs *Ruleset }

func (t tableRules) Hook(h dataplane.Hook) []string {
	var chains []*RuleChain
	for _, c := range t.rs.Chains {
		if c.Hook == string(h) {
			chains = append(chains, c)
		}
	}
	sort.Slice(chains, func(i, j int) bool { return chains[i].Priority < chains[j].Priority })
	names := make([]string, len(chains))
	for i, c := range chains {
		names[i] = c.Name
	}
	return names
}

func (t tableRules) Chain(name string) ([]string, bool) {
	c, ok := t.rs.Chains[name]
	if !ok {
		return nil, false
	}
	return c.Rules, true
}

// Eval evaluates one rule: its matches, left to right, then its statement.
func (t tableRules) Eval(w *dataplane.Walk, chain string, i int) (dataplane.Verdict, error) {
	e := &eval{rs: t.rs, w: w}
	rest := t.rs.Chains[chain].Rules[i] + " "
	for {
		matched, n, err := e.match(rest)
		if err != nil {
			return dataplane.Verdict{}, err
		}
		if n == 0 {
			break
		}
		if !matched {
			return dataplane.Verdict{}, nil
		}
		rest = rest[n:]
	}
	return e.statement(strings.TrimSpace(rest))
}

// eval is one rule's evaluation.
type eval struct {
	rs *Ruleset
	w  *dataplane.Walk
}

var (
	reAddrSet   = regexp.MustCompile(`^(ip6?) (saddr|daddr) (!= )?\{ ([^}]*) \} `)
	reAddrOne   = regexp.MustCompile(`^(ip6?) (saddr|daddr) (!= )?([0-9a-fA-F:][0-9a-fA-F.:]*(/\d+)?) `)
	reAddrNamed = regexp.MustCompile(`^(ip6?) (saddr|daddr) @(\S+) `)
	rePairNamed = regexp.MustCompile(`^ip6? saddr \. ip6? daddr @(\S+) `)
	reFib       = regexp.MustCompile(`^fib (saddr|daddr) type local `)
	reProto     = regexp.MustCompile(`^meta l4proto (tcp|udp|sctp) `)
	reMarkTest  = regexp.MustCompile(`^meta mark & (0x[0-9a-f]+) == (0x[0-9a-f]+|[0-9]+) `)
	reNumgen    = regexp.MustCompile(`^numgen random mod (\d+) (?:== )?0 `)
	reProtoSet  = regexp.MustCompile(`^meta l4proto \{ ([a-z, ]+) \} `)

	reVmapVIP   = regexp.MustCompile(`^ip6? daddr \. meta l4proto \. th dport vmap @(\S+)$`)
	reVmapPort  = regexp.MustCompile(`^meta l4proto \. th dport vmap @(\S+)$`)
	reMarkSet   = regexp.MustCompile(`^meta mark set meta mark (\||\^) (0x[0-9a-f]+)$`)
	reDnatOne   = regexp.MustCompile(`^dnat (?:ip6? )?to (\S+)$`)
	reDnatMap   = regexp.MustCompile(`^dnat ip6? to (ip6? daddr \. )?(tcp|udp|sctp) dport \. ` + index + ` map @(\S+)$`)
	rePickVmap  = regexp.MustCompile(`^` + index + ` vmap \{ ([^}]*) \}$`)
	reUpdate    = regexp.MustCompile(`^update @(\S+) \{ ip6? saddr \}$`)
	reVerdict   = regexp.MustCompile(`^(jump|goto) (\S+)$`)
	reTerminals = regexp.MustCompile(`^(return|drop|reject|accept)$`)
)

// index is how a rule draws an endpoint's index (renderer.index): at
// random, round robin or by source hash, among a modulus.
const index = `(numgen random|numgen inc|jhash ip6? saddr) mod (\d+)(?: seed (0x[0-9a-f]+))?`

// schedulerOf names the scheduler of an index expression ("" for random).
func schedulerOf(expr string) string {
	switch {
	case expr == "numgen inc":
		return "rr"
	case strings.HasPrefix(expr, "jhash"):
		return "sh"
	}
	return ""
}

// draw draws an index among mod as the expression does, and says what
// it knows of the draw: the index a source hash gives this packet.
func (e *eval) draw(expr, mod, seed string) (int, string, error) {
	n, _ := strconv.Atoi(mod)
	if n < 1 {
		return 0, "", fmt.Errorf("modulus %d", n)
	}
	switch s := schedulerOf(expr); s {
	case "sh":
		own := sourceHashIndex(e.w.Src, n, parseHex(seed))
		i := e.w.Schedule(n, s, own)
		if i == own {
			return i, fmt.Sprintf(" (jhash of %s: %d, this source's)", e.w.Src, own), nil
		}
		return i, fmt.Sprintf(" (other sources'; jhash of %s: %d)", e.w.Src, own), nil
	case "rr":
		return e.w.Schedule(n, s, -1), fmt.Sprintf(" (round robin: one turn in %d)", n), nil
	}
	return e.w.Choose(n), "", nil
}

// match evaluates the first match expression of s, returning whether it
// matched and how much of s it used (0: s starts with a statement).
func (e *eval) match(s string) (bool, int, error) {
	w := e.w
	switch {
	case strings.HasPrefix(s, "ct state new "):
		return true, len("ct state new "), nil
	case strings.HasPrefix(s, "ct status dnat "):
		return w.DNATed, len("ct status dnat "), nil
	}
	if m := rePairNamed.FindStringSubmatch(s); m != nil {
		set, err := e.set(m[1])
		return set[w.Src.String()+" . "+w.Dst.String()], len(m[0]), err
	}
	if m := reAddrNamed.FindStringSubmatch(s); m != nil {
		set, err := e.set(m[3])
		return set[e.addr(m[2]).String()], len(m[0]), err
	}
	if m := reAddrSet.FindStringSubmatch(s); m != nil {
		in, err := inPrefixes(e.addr(m[2]), strings.Split(m[4], ", "))
		return in != (m[3] != ""), len(m[0]), err
	}
	if m := reAddrOne.FindStringSubmatch(s); m != nil {
		in, err := inPrefixes(e.addr(m[2]), []string{m[4]})
		return in != (m[3] != ""), len(m[0]), err
	}
	return e.matchMeta(s)
}

// matchMeta evaluates the matches on other than addresses.
func (e *eval) matchMeta(s string) (bool, int, error) {
	w := e.w
	if m := reFib.FindStringSubmatch(s); m != nil {
		if m[1] == "saddr" {
			return w.FromLocal(), len(m[0]), nil
		}
		return w.IsLocal(w.Dst), len(m[0]), nil
	}
	if m := reProto.FindStringSubmatch(s); m != nil {
		return w.Proto == m[1], len(m[0]), nil
	}
	if m := reNumgen.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		if n < 1 {
			return false, 0, fmt.Errorf("numgen modulus %d", n)
		}
		return w.Chance(1 / float64(n)), len(m[0]), nil
	}
	if m := reProtoSet.FindStringSubmatch(s); m != nil {
		return slices.Contains(strings.Split(m[1], ", "), w.Proto), len(m[0]), nil
	}
	if m := reMarkTest.FindStringSubmatch(s); m != nil {
		mask, want := parseHex(m[1]), parseHex(m[2])
		return w.Mark&mask == want, len(m[0]), nil
	}
	return false, 0, nil
}

func (e *eval) addr(which string) netip.Addr {
	if which == "saddr" {
		return e.w.Src
	}
	return e.w.Dst
}

func (e *eval) set(name string) (map[string]bool, error) {
	s, ok := e.rs.Sets[name]
	if !ok {
		return nil, fmt.Errorf("set %q does not exist", name)
	}
	if _, dynamic := e.rs.Timeouts[name]; dynamic {
		return nil, nil // affinity sets hold no entry for a new client
	}
	return s, nil
}

func inPrefixes(a netip.Addr, raw []string) (bool, error) {
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

// statement evaluates the statement that ends a rule whose matches held.
func (e *eval) statement(s string) (dataplane.Verdict, error) {
	w := e.w
	if m := reVmapVIP.FindStringSubmatch(s); m != nil {
		return e.vmap(m[1], w.Dst.String()+" . "+w.Proto+" . "+strconv.Itoa(int(w.DPort)))
	}
	if m := reVmapPort.FindStringSubmatch(s); m != nil {
		return e.vmap(m[1], w.Proto+" . "+strconv.Itoa(int(w.DPort)))
	}
	if m := reVerdict.FindStringSubmatch(s); m != nil {
		return verdictOf(s), nil
	}
	if reTerminals.MatchString(s) {
		return verdictOf(s), nil
	}
	if m := reMarkSet.FindStringSubmatch(s); m != nil {
		if m[1] == "|" {
			w.Mark |= parseHex(m[2])
		} else {
			w.Mark ^= parseHex(m[2])
		}
		return dataplane.Verdict{Kind: dataplane.Continue}, nil
	}
	if s == "masquerade fully-random" || s == "masquerade" {
		w.Masquerade()
		return dataplane.Verdict{Kind: dataplane.Accept}, nil
	}
	return e.nat(s)
}

// nat evaluates affinity updates and DNATs.
func (e *eval) nat(s string) (dataplane.Verdict, error) {
	if m := reUpdate.FindStringSubmatch(s); m != nil {
		t, ok := e.rs.Timeouts[m[1]]
		if !ok {
			return dataplane.Verdict{}, fmt.Errorf("affinity set %q does not exist or has no timeout", m[1])
		}
		e.w.Pin(t)
		return dataplane.Verdict{Kind: dataplane.Continue}, nil
	}
	if m := reDnatOne.FindStringSubmatch(s); m != nil {
		return e.dnatTo(m[1])
	}
	if m := reDnatMap.FindStringSubmatch(s); m != nil {
		if m[2] != e.w.Proto {
			return dataplane.Verdict{}, nil // "tcp dport" matches TCP packets only
		}
		return e.dnatFromMap(m[1] != "", m[3:6], m[6])
	}
	if m := rePickVmap.FindStringSubmatch(s); m != nil {
		return e.pick(m[1:4], m[4])
	}
	return dataplane.Verdict{}, fmt.Errorf("unknown rule shape %q", s)
}

// pick follows a scheduler's choice among the endpoint chains of an
// anonymous verdict map ("0 : goto ep-..., 1 : goto ep-..."); every index
// must be there.
func (e *eval) pick(idx []string, elements string) (dataplane.Verdict, error) {
	verdicts := map[string]string{}
	for _, el := range strings.Split(elements, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(el), " : ")
		if !ok {
			return dataplane.Verdict{}, fmt.Errorf("bad verdict map element %q", el)
		}
		verdicts[k] = v
	}
	n, _ := strconv.Atoi(idx[1])
	for i := 0; i < n; i++ {
		if verdicts[strconv.Itoa(i)] == "" {
			return dataplane.Verdict{}, fmt.Errorf("verdict map has no element %d", i)
		}
	}
	i, what, err := e.draw(idx[0], idx[1], idx[2])
	if err != nil {
		return dataplane.Verdict{}, err
	}
	out := verdictOf(verdicts[strconv.Itoa(i)])
	out.Note = "  " + strconv.Itoa(i) + " : " + verdicts[strconv.Itoa(i)] + what
	return out, nil
}

// verdictOf reads a verdict as nft writes it: "jump X", "goto X",
// "return", "accept", "drop", "reject".
func verdictOf(s string) dataplane.Verdict {
	verb, target, _ := strings.Cut(s, " ")
	kind := map[string]dataplane.VerdictKind{"jump": dataplane.Jump, "goto": dataplane.Goto, "return": dataplane.Return,
		"accept": dataplane.Accept, "drop": dataplane.Drop, "reject": dataplane.Reject}[verb]
	return dataplane.Verdict{Kind: kind, Chain: target}
}

// vmap looks key up in a verdict map: no element, no match; an element's
// verdict is the rule's, shown after it ("@service-ips: 10.96.0.11 . tcp
// . 80 : goto svc-...").
func (e *eval) vmap(name, key string) (dataplane.Verdict, error) {
	v, err := e.get(name, key)
	if v == "" || err != nil {
		return dataplane.Verdict{}, err
	}
	out := verdictOf(v)
	out.Note = "  @" + name + ": " + key + " : " + v
	return out, nil
}

// get finds key in a map; "" when it is absent.
func (e *eval) get(name, key string) (string, error) {
	m, ok := e.rs.Maps[name]
	if !ok {
		return "", fmt.Errorf("map %q does not exist", name)
	}
	return m[key], nil
}

// dnatFromMap follows a shared-map balancing rule: an index among n, drawn
// as idx (expression, modulus, seed) says, looked up with the packet's
// destination; every index must be there.
func (e *eval) dnatFromMap(byIP bool, idx []string, name string) (dataplane.Verdict, error) {
	n, _ := strconv.Atoi(idx[1])
	prefix := strconv.Itoa(int(e.w.DPort)) + " . "
	if byIP {
		prefix = e.w.Dst.String() + " . " + prefix
	}
	for i := 0; i < n; i++ {
		if v, err := e.get(name, prefix+strconv.Itoa(i)); err != nil || v == "" {
			return dataplane.Verdict{}, fmt.Errorf("map %s has no element %s%d (%v)", name, prefix, i, err)
		}
	}
	i, what, err := e.draw(idx[0], idx[1], idx[2])
	if err != nil {
		return dataplane.Verdict{}, err
	}
	key := prefix + strconv.Itoa(i)
	v, _ := e.get(name, key)
	out, err := e.dnatTo(strings.Replace(v, " . ", ":", 1))
	out.Note = "  @" + name + ": " + key + " : " + v + what
	return out, err
}

func (e *eval) dnatTo(target string) (dataplane.Verdict, error) {
	target = strings.NewReplacer("[", "", "]", "").Replace(target)
	i := strings.LastIndex(target, ":")
	a, err := netip.ParseAddr(target[:max(i, 0)])
	port, perr := strconv.Atoi(target[i+1:])
	if i < 0 || err != nil || perr != nil {
		return dataplane.Verdict{}, fmt.Errorf("bad DNAT target %q", target)
	}
	e.w.DNAT(netip.AddrPortFrom(a, uint16(port)))
	return dataplane.Verdict{Kind: dataplane.Accept}, nil
}

func parseHex(s string) uint32 {
	v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	return uint32(v)
}
