package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// The tracer: the dataplane package's skeleton over the glue (parsed
// iptables-save tables of one family) and IPVS (a State, as Netlink.Read
// or Fake.State give it). IPVS is a step of its own in the hooks, where
// the kernel runs it: in LOCAL_IN after filter INPUT, in LOCAL_OUT after
// nat OUTPUT and before filter OUTPUT. A packet the local mark sends to
// the local table takes, in the forward hook, the path of one to a local
// address.

// Trace walks the first packet of a connection through the glue and IPVS.
// nodeAddrs are the node's own addresses; kube-ipvs0's come from s.
func Trace(s State, tables map[string]*iptables.Table, nodeAddrs []netip.Addr, pkt plan.Packet) ([]dataplane.TracePath, error) {
	return dataplane.Trace(NewRules(s, tables), append(slices.Clone(nodeAddrs), s.Addresses...), pkt)
}

// Rules are the glue and IPVS as the tracer reads them.
type Rules struct {
	state  State
	tables map[string]*iptables.Table
	sets   map[string]*Set
}

// NewRules returns the tracer's view of s and the glue's tables.
func NewRules(s State, tables map[string]*iptables.Table) *Rules {
	r := &Rules{state: s, tables: tables, sets: map[string]*Set{}}
	for i := range s.Sets {
		r.sets[s.Sets[i].Name] = &s.Sets[i]
	}
	return r
}

// The steps that are not iptables chains.
const (
	stepRoute    = "ipvs route"
	stepTakenIn  = "ipvs taken in"
	stepLocalIn  = "ipvs LOCAL_IN"
	stepLocalOut = "ipvs LOCAL_OUT"
)

var steps = map[string][]string{
	stepRoute:    {"local mark: policy route to the local table"},
	stepTakenIn:  {"-j filter INPUT", "-j " + stepLocalIn},
	stepLocalIn:  {"virtual server lookup"},
	stepLocalOut: {"virtual server lookup"},
}

var hookChains = map[dataplane.Hook][]string{
	dataplane.Prerouting:  {"mangle PREROUTING", "nat PREROUTING"},
	dataplane.Input:       {"filter INPUT", stepLocalIn},
	dataplane.Forward:     {stepRoute, "filter FORWARD"},
	dataplane.Output:      {"mangle OUTPUT", "nat OUTPUT", stepLocalOut, "filter OUTPUT"},
	dataplane.Postrouting: {"nat POSTROUTING"},
}

// Hook returns the chains a hook runs.
func (r *Rules) Hook(h dataplane.Hook) []string {
	var out []string
	for _, c := range hookChains[h] {
		if _, ok := r.Chain(c); ok {
			out = append(out, c)
		}
	}
	return out
}

// Chain returns a chain's rules ("<table> <chain>"), or a step's.
func (r *Rules) Chain(name string) ([]string, bool) {
	if s, ok := steps[name]; ok {
		return s, true
	}
	table, chain, _ := strings.Cut(name, " ")
	t := r.tables[table]
	if t == nil || t.Chains[chain] == nil {
		return nil, false
	}
	return t.Chains[chain].Rules, true
}

// Eval says what one rule or step does.
func (r *Rules) Eval(w *dataplane.Walk, chain string, i int) (dataplane.Verdict, error) {
	switch chain {
	case stepRoute:
		if r.state.LocalMark != 0 && w.Mark&r.state.LocalMark != 0 && !w.DNATed {
			return dataplane.Verdict{Kind: dataplane.Jump, Chain: stepTakenIn}, nil
		}
		return dataplane.Verdict{}, nil
	case stepTakenIn:
		if i == 0 {
			return dataplane.Verdict{Kind: dataplane.Jump, Chain: "filter INPUT"}, nil
		}
		return dataplane.Verdict{Kind: dataplane.Jump, Chain: stepLocalIn}, nil
	case stepLocalIn, stepLocalOut:
		return r.lookup(w, chain == stepLocalIn)
	}
	rules, _ := r.Chain(chain)
	table, _, _ := strings.Cut(chain, " ")
	return r.evalRule(w, table, rules[i])
}

// lookup is IPVS's: a firewall-mark service for the packet's mark, else
// the service of its address, protocol and port; a real server chosen
// among those of weight above 0 (weight 0 is a removed endpoint draining
// its connections, which takes no new one), equally likely. A packet to a kube-ipvs0 address that no
// service takes meets the node's own stack, which refuses it.
func (r *Rules) lookup(w *dataplane.Walk, localIn bool) (dataplane.Verdict, error) {
	if w.DNATed {
		return dataplane.Verdict{}, nil
	}
	vs := r.service(w)
	if vs == nil {
		if localIn && slices.Contains(r.state.Addresses, w.Dst) {
			return dataplane.Verdict{Kind: dataplane.Reject, Note: "no virtual server: the node's own stack refuses (TCP reset, ICMP port unreachable)"}, nil
		}
		return dataplane.Verdict{}, nil
	}
	reals := slices.DeleteFunc(sortedReals(vs.Reals), func(rs RealServer) bool { return rs.Weight == 0 })
	if len(reals) == 0 {
		return dataplane.Verdict{Kind: dataplane.Reject, Note: "service " + serviceLine(vs) + " has no real server taking connections: ICMP port unreachable"}, nil
	}
	rs := reals[w.Schedule(len(reals), vs.Scheduler, -1)]
	w.DNAT(rs.addrPort())
	if secs := vs.persistenceSeconds(); secs > 0 {
		w.Pin(int32(secs))
	}
	return dataplane.Verdict{Kind: dataplane.Continue, Note: fmt.Sprintf("service %s -> %s", serviceLine(vs), rs.addrPort())}, nil
}

func (r *Rules) service(w *dataplane.Walk) *VirtualServer {
	proto := map[string]Protocol{"tcp": TCP, "udp": UDP, "sctp": SCTP}[w.Proto]
	var byAddr *VirtualServer
	for i := range r.state.Services {
		vs := &r.state.Services[i]
		switch {
		case vs.FWMark != 0:
			if w.Mark == vs.FWMark && vs.Address.Is4() == w.Dst.Is4() {
				return vs
			}
		case vs.Address == w.Dst && vs.Port == w.DPort && vs.Protocol == proto:
			byAddr = vs
		}
	}
	return byAddr
}

// evalRule evaluates one glue rule: its matches, left to right (a "!"
// negates the next), then its target. It knows only the shapes the glue
// writes and fails on any other.
func (r *Rules) evalRule(w *dataplane.Walk, table, rule string) (dataplane.Verdict, error) {
	tok, err := iptables.Fields(rule)
	if err != nil {
		return dataplane.Verdict{}, err
	}
	matched, neg := true, false
	cond := func(ok bool) {
		if ok == neg {
			matched = false
		}
	}
	for i := 0; i < len(tok); i++ {
		t := tok[i]
		val := func(n int) (string, error) {
			if i+n >= len(tok) {
				return "", fmt.Errorf("missing value after %s", t)
			}
			return tok[i+n], nil
		}
		if t == "!" {
			neg = true
			continue
		}
		v, err := val(1)
		if err != nil {
			return dataplane.Verdict{}, err
		}
		switch t {
		case "-j":
			if !matched {
				return dataplane.Verdict{}, nil
			}
			return target(w, table, v, tok[i+2:])
		case "-s", "-d":
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return dataplane.Verdict{}, fmt.Errorf("bad address %q", v)
			}
			cond(p.Contains(map[bool]netip.Addr{true: w.Src, false: w.Dst}[t == "-s"]))
		case "-p":
			cond(v == w.Proto)
		case "--dport":
			cond(v == strconv.Itoa(int(w.DPort)))
		case "--src-type", "--dst-type":
			cond(v == "LOCAL" && map[bool]bool{true: w.FromLocal(), false: w.IsLocal(w.Dst)}[t == "--src-type"])
		case "--mark":
			val, mask, _ := strings.Cut(v, "/")
			cond(w.Mark&parseHex(mask) == parseHex(val))
		case "--ctstate":
			states := strings.Split(v, ",")
			cond(slices.Contains(states, "NEW") || (w.DNATed && slices.Contains(states, "DNAT")))
		case "--match-set":
			dirs, err := val(2)
			if err != nil {
				return dataplane.Verdict{}, err
			}
			ok, err := r.inSet(w, v, dirs)
			if err != nil {
				return dataplane.Verdict{}, err
			}
			cond(ok)
			i++
		case "-m":
			if !slices.Contains([]string{"comment", "tcp", "udp", "sctp", "set", "mark", "addrtype", "conntrack"}, v) {
				return dataplane.Verdict{}, fmt.Errorf("unknown match %q", v)
			}
		case "--comment":
		default:
			return dataplane.Verdict{}, fmt.Errorf("unknown option %q", t)
		}
		i++
		neg = false
	}
	return dataplane.Verdict{}, fmt.Errorf("no target")
}

// target does what a matched rule's target does.
func target(w *dataplane.Walk, table, t string, args []string) (dataplane.Verdict, error) {
	kinds := map[string]dataplane.VerdictKind{"ACCEPT": dataplane.Accept, "DROP": dataplane.Drop, "REJECT": dataplane.Reject, "RETURN": dataplane.Return}
	switch {
	case t == "MARK" && len(args) == 2 && args[0] == "--set-xmark":
		v, m, _ := strings.Cut(args[1], "/")
		w.Mark = w.Mark&^parseHex(m) ^ parseHex(v)
		return dataplane.Verdict{Kind: dataplane.Continue}, nil
	case t == "MASQUERADE" && (len(args) == 0 || len(args) == 1 && args[0] == "--random-fully"):
		w.Masquerade()
		return dataplane.Verdict{Kind: dataplane.Accept}, nil
	case t == "REJECT" && len(args) == 2 && args[0] == "--reject-with":
		return dataplane.Verdict{Kind: dataplane.Reject}, nil
	case kinds[t] != 0 && len(args) == 0:
		return dataplane.Verdict{Kind: kinds[t]}, nil
	case strings.HasPrefix(t, "KUBE-") && len(args) == 0:
		return dataplane.Verdict{Kind: dataplane.Jump, Chain: table + " " + t}, nil
	}
	return dataplane.Verdict{}, fmt.Errorf("unknown target %s %v", t, args)
}

// inSet reports whether the packet, read in dirs ("dst", "dst,dst",
// "dst,dst,src"), is in set name.
func (r *Rules) inSet(w *dataplane.Walk, name, dirs string) (bool, error) {
	set := r.sets[name]
	if set == nil {
		return false, fmt.Errorf("set %s does not exist", name)
	}
	want := map[SetType]string{BitmapPort: "dst", HashIPPort: "dst,dst", HashIPPortIP: "dst,dst,src", HashIPPortNet: "dst,dst,src"}[set.Type]
	if dirs != want {
		return false, fmt.Errorf("set %s (%s) matched as %s", name, set.Type, dirs)
	}
	proto := map[string]Protocol{"tcp": TCP, "udp": UDP, "sctp": SCTP}[w.Proto]
	for _, e := range set.Entries {
		switch set.Type {
		case BitmapPort:
			// ipset reads ports of TCP and UDP only.
			if (proto == TCP || proto == UDP) && e.Port == w.DPort {
				return true, nil
			}
		case HashIPPort, HashIPPortIP, HashIPPortNet:
			if e.IP != w.Dst || e.Protocol != proto || e.Port != w.DPort {
				continue
			}
			switch {
			case set.Type == HashIPPort,
				set.Type == HashIPPortIP && e.IP2 == w.Src,
				set.Type == HashIPPortNet && e.Net.Contains(w.Src):
				return true, nil
			}
		}
	}
	return false, nil
}

func parseHex(s string) uint32 {
	v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	return uint32(v)
}
