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
		svc.rules = append(svc.rules, r.balance(o, sp, internal)...)
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
		ext.rules = append([]string{"jump " + chainMarkMasq}, r.balance(o, sp, sp.ClusterEndpoints)...)
		return []chainDef{ext}
	}
	cluster := chainDef{name: prefixCluster + id, rules: r.balance(o, sp, sp.ClusterEndpoints)}
	if len(r.clusterCIDRs) > 0 {
		ext.rules = append(ext.rules, fmt.Sprintf("%s saddr { %s } goto %s", r.w.ip, joinPrefixes(r.clusterCIDRs), cluster.name))
	}
	ext.rules = append(ext.rules,
		"fib saddr type local jump "+chainMarkMasq,
		"fib saddr type local goto "+cluster.name,
	)
	ext.rules = append(ext.rules, r.balance(o, sp, sp.LocalEndpoints)...)
	return []chainDef{ext, cluster}
}

// balance renders the rules that pick one of eps uniformly at random and
// DNAT to it: a cascade, as kube-proxy's iptables mode does with
// "statistic mode random probability", where rule i of n matches with
// probability 1/(n-i) and the last always does. With session affinity, a
// client seen recently goes back to its endpoint first.
//
// Why no map: a per-Service set costs the kernel a scan of all sets (by
// name, or to name an anonymous one), and one shared map is checked against
// every rule bound to it on each change; either way a cold sync at 10,000
// Services takes tens of seconds. Plain rules take one.
func (r *renderer) balance(o *portObjects, sp *plan.ServicePort, eps []netip.AddrPort) []string {
	if len(eps) == 0 {
		return nil
	}
	proto := "meta l4proto " + strings.ToLower(string(sp.Protocol))
	r.hairpin(o, sp, eps)
	pick := func(i int) string {
		if i == len(eps)-1 {
			return ""
		}
		return fmt.Sprintf("numgen random mod %d == 0 ", len(eps)-i)
	}
	var rules []string
	if sp.AffinitySeconds == 0 {
		for i, e := range eps {
			rules = append(rules, fmt.Sprintf("%s %sdnat %s to %s", proto, pick(i), r.w.ip, dnatTarget(e)))
		}
		return rules
	}
	portID := portID(sp.Key)
	for _, e := range eps {
		eid := endpointID(portID, e)
		r.affinityEndpoint(o, sp, eid, e, proto)
		rules = append(rules, fmt.Sprintf("%s saddr @%s goto %s", r.w.ip, affinitySetName(eid, sp.AffinitySeconds), prefixEndpoint+eid))
	}
	for i, e := range eps {
		rules = append(rules, pick(i)+"goto "+prefixEndpoint+endpointID(portID, e))
	}
	return rules
}

// hairpin claims the hairpin set entries for the endpoints that may receive
// their own traffic through this node: local ones (and those of unknown
// node), and with externalTrafficPolicy Local every cluster endpoint, since
// a pod elsewhere may reach itself through this node's NodePort without
// being masqueraded. Other remote pods' Service traffic never crosses this
// node, so the set stays small.
func (r *renderer) hairpin(o *portObjects, sp *plan.ServicePort, eps []netip.AddrPort) {
	remoteToo := sp.ExternalLocal
	for _, e := range eps {
		if !remoteToo && !mayBeLocal(sp, e) {
			continue
		}
		hp := []string{e.Addr().String(), e.Addr().String()}
		o.elems = appendUnique(o.elems, elemDef{into: setHairpin, key: hp, comment: comment(sp.Key)})
	}
}

func mayBeLocal(sp *plan.ServicePort, addr netip.AddrPort) bool {
	for _, e := range sp.Endpoints {
		if e.Addr == addr {
			return e.Local || e.NodeName == ""
		}
	}
	return true
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
