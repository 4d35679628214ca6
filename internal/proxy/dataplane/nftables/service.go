package nftables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// portObjects is everything one service port owns in the table: its chains
// (with their rules), its affinity sets, and the elements it claims in the
// shared maps and sets.
type portObjects struct {
	key    plan.Key
	chains []chainDef
	shared []chainDef // balancing chains several ports may use
	sets   []setDef
	elems  []elemDef
}

type chainDef struct {
	name  string
	rules []string
}

type setDef struct {
	name    string
	timeout int32 // seconds
}

// elemDef is an element of a shared map or set. Key and value hold their
// fields already joined with " . ", as nft writes them: one string each
// keeps the elements small.
//
// A group stands for the n elements "key . i : group[i]" of an endpoint
// map: one address's candidates. Claims and diffs work on whole groups (so
// an address conflict resolves for all its candidates at once, and 100,000
// endpoints cost 10,000 claims); they become elements only when written.
type elemDef struct {
	into    string // map or set name
	isMap   bool
	key     string
	value   string
	comment *string
	group   []netip.AddrPort // the plan's endpoint slice, not a copy
}

// expand returns the elements a group stands for; any other element is
// returned as it is.
func (e elemDef) expand() []elemDef {
	if e.group == nil {
		return []elemDef{e}
	}
	out := make([]elemDef, len(e.group))
	for i := range e.group {
		out[i] = e.member(i)
	}
	return out
}

// member is element i of a group.
func (e elemDef) member(i int) elemDef {
	ep := e.group[i]
	return elemDef{into: e.into, isMap: true, key: e.key + " . " + strconv.Itoa(i), value: ep.Addr().String() + " . " + strconv.Itoa(int(ep.Port()))}
}

func fields(f ...string) string { return strings.Join(f, " . ") }

// words are the family-specific spellings in rules.
type words struct {
	ip       string // "ip" or "ip6"
	addrType string // "ipv4_addr" or "ipv6_addr"
	loopback string // loopback network, never a NodePort address by default
}

func wordsFor(f plan.Family) words {
	if f == plan.IPv6 {
		return words{ip: "ip6", addrType: "ipv6_addr", loopback: "::1"}
	}
	return words{ip: "ip", addrType: "ipv4_addr", loopback: "127.0.0.0/8"}
}

// Capabilities are what this dataplane can write: everything the plan
// resolves (pod-network matches are sets of any size), and of the
// schedulers round robin (numgen inc) and source hashing (jhash); other
// schedulers get a uniform random choice.
var Capabilities = plan.Capabilities{Dataplane: "nftables", Schedulers: []string{"rr", "sh"}}

// renderer turns service ports into table objects for one family. It
// translates the plan's outcomes and decides nothing.
type renderer struct {
	w   words
	gen int // generation of the endpoint maps
}

// port renders one service port. It is a pure function of the port and the
// renderer's configuration, so a partial sync and a full sync agree.
func (r *renderer) port(sp *plan.ServicePort) *portObjects {
	o := &portObjects{key: sp.Key}
	id := portID(sp.Key)
	proto := strings.ToLower(string(sp.Protocol))
	cmt := comment(sp.Key) // one string for all the port's elements
	claim := func(into string, isMap bool, key []string, value ...string) {
		o.elems = append(o.elems, elemDef{into: into, isMap: isMap, key: fields(key...), value: fields(value...), comment: cmt})
	}
	vip := func(a netip.Addr, port uint16) []string { return []string{a.String(), proto, fmt.Sprint(port)} }

	r.hairpin(o, sp)

	// Traffic to the ClusterIP.
	claim(setClusterIPs, false, []string{sp.ClusterIP.String()})
	if svc := r.route(o, sp, &sp.Internal, prefixService+id, byIP(mapEndpoints, sp.Port, sp.ClusterIP), lookup{}); svc != "" {
		claim(mapServiceIPs, true, vip(sp.ClusterIP, sp.Port), "goto "+svc)
	} else {
		claim(mapNoEndpointIPs, true, vip(sp.ClusterIP, sp.Port), verdict(sp.Internal.Default.Action))
	}

	// Traffic to external addresses. What the default outcome does not
	// forward is not DNATed, and endpoints-check gives it its verdict.
	if !sp.HasExternal() {
		return o
	}
	noEndpoints := ""
	if ext := sp.External.Default.Action; ext != plan.Forward {
		noEndpoints = verdict(ext)
	}
	addrs := append(append([]netip.Addr{}, sp.ExternalIPs...), sp.LoadBalancerIPs...)
	if len(addrs) > 0 {
		ext := r.route(o, sp, &sp.External, prefixExternal+id, byIP(mapEndpoints, sp.Port, addrs...), byIP(mapClusterEndpoints, sp.Port, addrs...))
		for _, a := range addrs {
			if ext != "" {
				claim(mapServiceIPs, true, vip(a, sp.Port), "goto "+ext)
			}
			if noEndpoints != "" {
				claim(mapNoEndpointIPs, true, vip(a, sp.Port), noEndpoints)
			}
		}
	}
	if len(sp.Firewall.Allow) > 0 {
		fw := chainDef{name: prefixFirewall + id, rules: []string{
			fmt.Sprintf("%s saddr != { %s } %s", r.w.ip, joinPrefixes(sp.Firewall.Allow), verdict(sp.Firewall.Outside)),
		}}
		o.chains = append(o.chains, fw)
		for _, a := range sp.LoadBalancerIPs {
			claim(mapFirewallIPs, true, vip(a, sp.Port), "goto "+fw.name)
		}
	}
	if sp.NodePort != 0 {
		key := []string{proto, fmt.Sprint(sp.NodePort)}
		if np := r.route(o, sp, &sp.External, prefixNodePort+id, byPort(mapNodePortEndpoints, sp.NodePort), byPort(mapNodePortClusterEndpoints, sp.NodePort)); np != "" {
			claim(mapServiceNodePorts, true, key, "goto "+np)
		}
		if noEndpoints != "" {
			claim(mapNoEndpointNodePts, true, key, noEndpoints)
		}
	}
	return o
}

// verdict writes a plan's reject or drop.
func verdict(a plan.Action) string {
	if a == plan.Reject {
		return "goto " + chainReject
	}
	return "drop"
}

// route renders the chain of a route, named name, and returns its name, or
// "" when the route forwards nothing. Bypasses come first, each behind the
// match of its sources; their endpoints are looked up in the bypass maps
// (the plan gives all of a route's bypasses one pool), the default's in lb.
func (r *renderer) route(o *portObjects, sp *plan.ServicePort, route *plan.Route, name string, lb, bypass lookup) string {
	if !route.Forwards() {
		return ""
	}
	c := chainDef{name: name}
	var bypassed []string // balancing rules of the bypasses' pool
	for i, b := range route.Bypasses {
		if i == 0 {
			bypassed = r.balance(o, sp, sp.Backends(b.Pool), bypass)
		}
		match := r.sources(b.From)
		c.rules = append(c.rules, withMatch(match, r.masquerade(b.Masquerade))...)
		c.rules = append(c.rules, withMatch(match, bypassed)...)
	}
	if d := route.Default; d.Action == plan.Forward {
		c.rules = append(c.rules, r.masquerade(d.Masquerade)...)
		c.rules = append(c.rules, r.balance(o, sp, sp.Backends(d.Pool), lb)...)
	}
	o.chains = append(o.chains, c)
	return name
}

// sources writes a class of sources as a match.
func (r *renderer) sources(s plan.Sources) string {
	if s.Node {
		return "fib saddr type local"
	}
	return fmt.Sprintf("%s saddr { %s }", r.w.ip, joinPrefixes(s.Prefixes))
}

// masquerade writes when an outcome masquerades.
func (r *renderer) masquerade(m plan.Masquerade) []string {
	switch m.Mode {
	case plan.MasqAlways:
		return []string{"jump " + chainMarkMasq}
	case plan.MasqUnlessFrom:
		return []string{fmt.Sprintf("%s saddr != { %s } jump %s", r.w.ip, joinPrefixes(m.Except), chainMarkMasq)}
	}
	return nil
}

// withMatch prefixes each rule with a match. Balancing is one rule (a goto)
// without affinity; with affinity it is several, all of them needing it.
func withMatch(match string, rules []string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = match + " " + r
	}
	return out
}

// lookup says where a balancing chain finds a packet's candidates: which
// shared map (one per protocol), keyed by which packet fields, and the keys
// of this port's addresses in it.
type lookup struct {
	mapBase string
	byPort  bool // keyed by port (NodePorts), not address . port
	keys    [][]string
}

func byIP(m string, port uint16, addrs ...netip.Addr) lookup {
	l := lookup{mapBase: m}
	for _, a := range addrs {
		l.keys = append(l.keys, []string{a.String(), fmt.Sprint(port)})
	}
	return l
}

func byPort(m string, port uint16) lookup {
	return lookup{mapBase: m, byPort: true, keys: [][]string{{fmt.Sprint(port)}}}
}

// balance renders the rules that pick one of eps uniformly at random and
// DNAT to it. The candidates of every Service live in a few shared maps,
// one set per protocol, keyed by the packet's destination (address . port,
// or the port alone for NodePorts) and an index 0..n-1 drawn by numgen; a
// shared chain per map and n does the lookup and the DNAT. So an endpoint
// change touches only map elements: no rule, no set per Service.
//
// Why: the kernel looks named sets up in a list, names anonymous ones by
// scanning them all, checks a new map element against every rule bound to
// the map, and re-validates the whole table whenever a NAT or jump rule is
// added; per-Service sets or per-Service DNAT rules make a cold sync at
// 10,000 Services take from 3 to 70 seconds, or a single change 60 ms.
//
// The plan's scheduler draws the index instead of numgen random: source
// hashing ("sh") hashes the client address with a fixed seed (jhash), so
// one client gets one endpoint, the same on every node and after every
// sync while the endpoints stay; its chains are shared too. Round robin
// ("rr") counts connections (numgen inc), and a counter is a rule's own:
// the DNAT rule sits in the port's route chain, one counter per route
// (the ClusterIP, the external addresses, the NodePort, as IPVS has one
// virtual server per address), restarting when the rule is rewritten.
//
// With session affinity a cascade of rules picks the endpoint instead
// (rule i matches with probability 1/(n-i), as kube-proxy's
// "statistic mode random probability"), or one rule of the scheduler's,
// after rules that send a client seen recently back to its endpoint.
func (r *renderer) balance(o *portObjects, sp *plan.ServicePort, eps []netip.AddrPort, lb lookup) []string {
	if len(eps) == 0 {
		return nil
	}
	if sp.AffinitySeconds > 0 {
		return r.balanceAffinity(o, sp, eps)
	}
	proto := strings.ToLower(string(sp.Protocol))
	mapName := endpointMapName(lb.mapBase, proto, r.gen)
	for _, key := range lb.keys {
		o.elems = append(o.elems, elemDef{into: mapName, isMap: true, key: fields(key...), group: eps})
	}
	fields := r.w.ip + " daddr . " + proto + " dport"
	if lb.byPort {
		fields = proto + " dport"
	}
	dnat := fmt.Sprintf("dnat %s to %s . %s map @%s", r.w.ip, fields, r.index(sp.Scheduler, len(eps)), mapName)
	if sp.Scheduler == "rr" {
		return []string{dnat}
	}
	chain := fmt.Sprintf("%s%s-%s-%d", prefixBalance, lb.mapBase, proto, len(eps))
	if sp.Scheduler != "" {
		chain += "-" + sp.Scheduler
	}
	o.shared = append(o.shared, chainDef{name: chain, rules: []string{dnat}})
	return []string{"goto " + chain}
}

// sourceHashSeed seeds jhash: fixed, so that every node, and every rule
// rewritten, sends a client to the same endpoint.
const sourceHashSeed = "0x73766370" // "svcp"

// index writes the expression that draws one index among n for a
// scheduler the plan resolved: "rr", "sh", or "" for random.
func (r *renderer) index(scheduler string, n int) string {
	switch scheduler {
	case "rr":
		return fmt.Sprintf("numgen inc mod %d", n)
	case "sh":
		return fmt.Sprintf("jhash %s saddr mod %d seed %s", r.w.ip, n, sourceHashSeed)
	}
	return fmt.Sprintf("numgen random mod %d", n)
}

// balanceAffinity renders the affinity rules and the random cascade.
func (r *renderer) balanceAffinity(o *portObjects, sp *plan.ServicePort, eps []netip.AddrPort) []string {
	proto := "meta l4proto " + strings.ToLower(string(sp.Protocol))
	portID := portID(sp.Key)
	var rules []string
	for _, e := range eps {
		eid := endpointID(portID, e)
		r.affinityEndpoint(o, sp, eid, e, proto)
		rules = append(rules, fmt.Sprintf("%s saddr @%s goto %s", r.w.ip, affinitySetName(eid, sp.AffinitySeconds), prefixEndpoint+eid))
	}
	if sp.Scheduler != "" {
		picks := make([]string, len(eps))
		for i, e := range eps {
			picks[i] = fmt.Sprintf("%d : goto %s%s", i, prefixEndpoint, endpointID(portID, e))
		}
		// " , ": knftables' fake takes the word after "goto" for the chain's
		// name; nft reads the space as nothing and lists ", ".
		return append(rules, fmt.Sprintf("%s vmap { %s }", r.index(sp.Scheduler, len(eps)), strings.Join(picks, " , ")))
	}
	for i, e := range eps {
		pick := ""
		if i < len(eps)-1 {
			pick = fmt.Sprintf("numgen random mod %d == 0 ", len(eps)-i)
		}
		rules = append(rules, pick+"goto "+prefixEndpoint+endpointID(portID, e))
	}
	return rules
}

// hairpin claims the plan's hairpin endpoints in the hairpin set, as
// "endpoint . endpoint": masquerading marks a DNATed packet whose source and
// destination are such an endpoint.
func (r *renderer) hairpin(o *portObjects, sp *plan.ServicePort) {
	for _, a := range sp.Hairpin {
		o.elems = append(o.elems, elemDef{into: setHairpin, key: fields(a.String(), a.String())})
	}
}

// affinityEndpoint adds (once) an endpoint's chain and affinity set.
func (r *renderer) affinityEndpoint(o *portObjects, sp *plan.ServicePort, eid string, e netip.AddrPort, proto string) {
	name := prefixEndpoint + eid
	for _, c := range o.chains {
		if c.name == name {
			return
		}
	}
	set := affinitySetName(eid, sp.AffinitySeconds)
	o.sets = append(o.sets, setDef{name: set, timeout: sp.AffinitySeconds})
	o.chains = append(o.chains, chainDef{name: name, rules: []string{
		fmt.Sprintf("update @%s { %s saddr }", set, r.w.ip),
		fmt.Sprintf("%s dnat %s to %s", proto, r.w.ip, dnatTarget(e)),
	}})
}

// affinitySetName carries the timeout, because the kernel cannot change the
// timeout of an existing set: a new timeout makes a new set.
func affinitySetName(eid string, timeout int32) string {
	return fmt.Sprintf("%s%s-%ds", prefixAffinity, eid, timeout)
}

func dnatTarget(e netip.AddrPort) string {
	if e.Addr().Is6() {
		return fmt.Sprintf("[%s]:%d", e.Addr(), e.Port())
	}
	return e.String()
}

func joinPrefixes(ps []netip.Prefix) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
}

// element converts an element (not a group: see expand) for a transaction.
func (e elemDef) element() *knftables.Element {
	el := &knftables.Element{Key: []string{e.key}, Comment: e.comment}
	if e.value != "" {
		el.Value = []string{e.value}
	}
	if e.isMap {
		el.Map = e.into
	} else {
		el.Set = e.into
	}
	return el
}
