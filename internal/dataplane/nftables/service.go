package nftables

import (
	"fmt"
	"net/netip"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/svcproxy/svcproxy/internal/plan"
)

// portObjects is everything one service port owns in the table: its chains
// (with their rules), its affinity sets, and the elements it claims in the
// shared maps and sets.
type portObjects struct {
	chains []chainDef
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

type elemDef struct {
	into    string // map or set name
	isMap   bool
	key     []string
	value   []string
	comment *string
}

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

// renderer turns service ports into table objects for one family.
type renderer struct {
	w            words
	clusterCIDRs []netip.Prefix
	masqAll      bool
}

// port renders one service port. It is a pure function of the port and the
// renderer's configuration, so a partial sync and a full sync agree.
func (r *renderer) port(sp *plan.ServicePort) *portObjects {
	o := &portObjects{}
	id := portID(sp.Key)
	proto := strings.ToLower(string(sp.Protocol))
	cmt := comment(sp.Key)
	claim := func(into string, isMap bool, key []string, value ...string) {
		o.elems = append(o.elems, elemDef{into: into, isMap: isMap, key: key, value: value, comment: cmt})
	}
	vip := func(a netip.Addr, port uint16) []string { return []string{a.String(), proto, fmt.Sprint(port)} }
	noEndpoints := "goto " + chainReject

	// Traffic to the ClusterIP.
	claim(setClusterIPs, false, []string{sp.ClusterIP.String()})
	switch internal := sp.InternalEndpoints(); {
	case !sp.HasEndpoints():
		claim(mapNoEndpointIPs, true, vip(sp.ClusterIP, sp.Port), noEndpoints)
	case len(internal) == 0:
		claim(mapNoEndpointIPs, true, vip(sp.ClusterIP, sp.Port), "drop")
	default:
		svc := chainDef{name: prefixService + id, rules: r.clusterIPMasq()}
		svc.rules = append(svc.rules, r.balance(o, sp, id, internal)...)
		o.chains = append(o.chains, svc)
		claim(mapServiceIPs, true, vip(sp.ClusterIP, sp.Port), "goto "+svc.name)
	}

	// Traffic to external addresses.
	if !sp.HasExternal() {
		return o
	}
	extVerdict, noEpVerdict := "", noEndpoints
	if sp.HasEndpoints() {
		o.chains = append(o.chains, r.external(o, sp, id)...)
		extVerdict, noEpVerdict = "goto "+prefixExternal+id, ""
		if len(sp.ExternalEndpoints()) == 0 {
			noEpVerdict = "drop" // reached only by traffic from outside the cluster
		}
	}
	addrs := append(append([]netip.Addr{}, sp.ExternalIPs...), sp.LoadBalancerIPs...)
	for _, a := range addrs {
		if extVerdict != "" {
			claim(mapServiceIPs, true, vip(a, sp.Port), extVerdict)
		}
		if noEpVerdict != "" {
			claim(mapNoEndpointIPs, true, vip(a, sp.Port), noEpVerdict)
		}
	}
	if len(sp.SourceRanges) > 0 && len(sp.LoadBalancerIPs) > 0 {
		fw := chainDef{name: prefixFirewall + id, rules: []string{
			fmt.Sprintf("%s saddr != { %s } drop", r.w.ip, joinPrefixes(sp.SourceRanges)),
		}}
		o.chains = append(o.chains, fw)
		for _, a := range sp.LoadBalancerIPs {
			claim(mapFirewallIPs, true, vip(a, sp.Port), "goto "+fw.name)
		}
	}
	if sp.NodePort != 0 {
		np := []string{proto, fmt.Sprint(sp.NodePort)}
		if extVerdict != "" {
			claim(mapServiceNodePorts, true, np, extVerdict)
		}
		if noEpVerdict != "" {
			claim(mapNoEndpointNodePts, true, np, noEpVerdict)
		}
	}
	return o
}

// clusterIPMasq masquerades ClusterIP traffic that does not come from the
// pod network (or all of it, with masqueradeAll).
func (r *renderer) clusterIPMasq() []string {
	switch {
	case r.masqAll:
		return []string{"jump " + chainMarkMasq}
	case len(r.clusterCIDRs) > 0:
		return []string{fmt.Sprintf("%s saddr != { %s } jump %s", r.w.ip, joinPrefixes(r.clusterCIDRs), chainMarkMasq)}
	}
	return nil
}

// external renders the chain for traffic to NodePorts, external IPs and LB
// IPs. With the Cluster policy it is always masqueraded. With the Local
// policy the client IP is kept and only local endpoints serve it, except
// for traffic from pods and from the node itself, which may use any
// endpoint (the node's own traffic masqueraded).
func (r *renderer) external(o *portObjects, sp *plan.ServicePort, id string) []chainDef {
	ext := chainDef{name: prefixExternal + id}
	if !sp.ExternalLocal {
		ext.rules = append([]string{"jump " + chainMarkMasq}, r.balance(o, sp, id, sp.ClusterEndpoints)...)
		return []chainDef{ext}
	}
	cluster := chainDef{name: prefixCluster + id, rules: r.balance(o, sp, id, sp.ClusterEndpoints)}
	if len(r.clusterCIDRs) > 0 {
		ext.rules = append(ext.rules, fmt.Sprintf("%s saddr { %s } goto %s", r.w.ip, joinPrefixes(r.clusterCIDRs), cluster.name))
	}
	ext.rules = append(ext.rules,
		"fib saddr type local jump "+chainMarkMasq,
		"fib saddr type local goto "+cluster.name,
	)
	ext.rules = append(ext.rules, r.balance(o, sp, id, sp.LocalEndpoints)...)
	return []chainDef{ext, cluster}
}

// balance renders the rules that pick one of eps uniformly at random
// (numgen), DNAT to it, and with session affinity keep a client on the
// endpoint it had. Without affinity no per-endpoint chain is needed: one
// rule with an anonymous map does it all.
func (r *renderer) balance(o *portObjects, sp *plan.ServicePort, id string, eps []netip.AddrPort) []string {
	if len(eps) == 0 {
		return nil
	}
	proto := "meta l4proto " + strings.ToLower(string(sp.Protocol))
	for _, e := range eps {
		hp := []string{e.Addr().String(), e.Addr().String()}
		o.elems = appendUnique(o.elems, elemDef{into: setHairpin, key: hp, comment: comment(sp.Key)})
	}
	if sp.AffinitySeconds == 0 {
		if len(eps) == 1 {
			return []string{fmt.Sprintf("%s dnat %s to %s", proto, r.w.ip, dnatTarget(eps[0]))}
		}
		return []string{fmt.Sprintf("%s dnat %s to numgen random mod %d map { %s }", proto, r.w.ip, len(eps), indexMap(eps, func(e netip.AddrPort) string {
			return e.Addr().String() + " . " + fmt.Sprint(e.Port())
		}))}
	}
	var rules []string
	for _, e := range eps {
		eid := endpointID(id, e)
		r.affinityEndpoint(o, sp, eid, e, proto)
		rules = append(rules, fmt.Sprintf("%s saddr @%s goto %s", r.w.ip, affinitySetName(eid, sp.AffinitySeconds), prefixEndpoint+eid))
	}
	if len(eps) == 1 {
		return append(rules, "goto "+prefixEndpoint+endpointID(id, eps[0]))
	}
	// (The space before each comma keeps chain names whole for tools that
	// split rules on spaces, like knftables' fake.)
	return append(rules, fmt.Sprintf("numgen random mod %d vmap { %s }", len(eps), indexMap(eps, func(e netip.AddrPort) string {
		return "goto " + prefixEndpoint + endpointID(id, e) + " "
	})))
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

func indexMap(eps []netip.AddrPort, value func(netip.AddrPort) string) string {
	parts := make([]string, len(eps))
	for i, e := range eps {
		parts[i] = fmt.Sprintf("%d : %s", i, value(e))
	}
	return strings.Join(parts, ", ")
}

func joinPrefixes(ps []netip.Prefix) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
}

func appendUnique(elems []elemDef, e elemDef) []elemDef {
	for _, x := range elems {
		if x.into == e.into && strings.Join(x.key, " ") == strings.Join(e.key, " ") {
			return elems
		}
	}
	return append(elems, e)
}

// element converts an element definition for a transaction.
func (e elemDef) element() *knftables.Element {
	el := &knftables.Element{Key: e.key, Value: e.value, Comment: e.comment}
	if e.isMap {
		el.Map = e.into
	} else {
		el.Set = e.into
	}
	return el
}
