package iptables

import (
	"net/netip"
	"slices"
	"strconv"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Chain is one chain and its rules, each rule the arguments after
// "-A <chain>".
type Chain struct {
	Name  string
	Rules []string
}

// dispatch names one of the shared chains every service port adds rules to.
type dispatch struct{ table, chain string }

// The dispatch chains, in the order they are written.
var dispatchChains = [nDispatch]dispatch{
	{"nat", chainServices}, {"nat", chainNodePorts},
	{"filter", chainServices}, {"filter", chainExternalServices}, {"filter", chainNodePorts}, {"filter", chainFirewall},
}

// portRules is what one service port contributes: its own nat chains and
// its rules in the dispatch chains.
type portRules struct {
	chains    []*Chain
	dispatch  [nDispatch][]string // indexed like dispatchChains
	clusterIP netip.Addr
}

const nDispatch = 6

// Indexes into dispatchChains.
const (
	dNatServices = iota
	dNatNodePorts
	dFilterServices
	dFilterExternal
	dFilterNodePorts
	dFilterFirewall
)

// renderer translates service ports of one family; it decides nothing.
type renderer struct {
	fam plan.Family
}

// Capabilities are what this dataplane can write: the ClusterIP masquerade
// rule matches "! -s <pod network>", one prefix per family; of the
// schedulers, round robin (statistic nth), not source hashing.
var Capabilities = plan.Capabilities{Dataplane: "iptables", PodPrefixes: 1, Schedulers: []string{"rr"}}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// to writes a rule matching dst:port of the port's protocol.
func (r *renderer) to(sp *plan.ServicePort, dst netip.Addr, port uint16, what, target string) string {
	pre := ""
	if dst.IsValid() {
		pre = "-d " + hostPrefix(dst) + " "
	}
	p := protoLower(sp.Key)
	return pre + "-p " + p + " " + comment(what) + " -m " + p + " --dport " + strconv.Itoa(int(port)) + " -j " + target
}

// poolChain names the chain balancing over one of the port's pools:
// KUBE-SVC for the cluster pool, KUBE-SVL for the local one.
func poolChain(sp *plan.ServicePort, pool plan.Pool) string {
	if pool == plan.LocalPool {
		return portChain(prefixSVL, sp.Key)
	}
	return portChain(prefixSVC, sp.Key)
}

// target is the iptables target of a reject or drop.
func target(a plan.Action) string {
	if a == plan.Reject {
		return "REJECT"
	}
	return "DROP"
}

func (r *renderer) port(sp *plan.ServicePort) *portRules {
	pr := &portRules{clusterIP: sp.ClusterIP, chains: r.pools(sp)}
	name := sp.ServicePortName.String()
	switch in := sp.Internal.Default; in.Action {
	case plan.Forward:
		pr.add(dNatServices, r.to(sp, sp.ClusterIP, sp.Port, name+" cluster IP", poolChain(sp, in.Pool)))
	case plan.Reject:
		pr.add(dFilterServices, r.to(sp, sp.ClusterIP, sp.Port, name+" has no endpoints", "REJECT"))
	default:
		pr.add(dFilterServices, r.to(sp, sp.ClusterIP, sp.Port, name+" has no local endpoints", "DROP"))
	}
	if sp.HasExternal() {
		r.external(pr, sp)
	}
	return pr
}

// external writes what the port's external addresses get: jumps to
// KUBE-EXT (through KUBE-FW for load-balancer IPs with source ranges),
// the source-range filter, and the verdict of traffic the default outcome
// does not forward, which is not DNATed and so still meets the filter
// chains with its Service address.
func (r *renderer) external(pr *portRules, sp *plan.ServicePort) {
	name := sp.ServicePortName.String()
	ext, fw := portChain(prefixEXT, sp.Key), portChain(prefixFW, sp.Key)
	forwards := sp.External.Forwards()
	notForwarded := ""
	if d := sp.External.Default.Action; d != plan.Forward {
		notForwarded = target(d)
	}
	if forwards {
		pr.chains = append(pr.chains, r.extChain(sp, ext))
	}
	dispatch := func(ip netip.Addr, what, to string) {
		if forwards {
			pr.add(dNatServices, r.to(sp, ip, sp.Port, name+" "+what, to))
		}
		if notForwarded != "" {
			pr.add(dFilterExternal, r.to(sp, ip, sp.Port, name+" "+what+": no usable endpoint", notForwarded))
		}
	}
	for _, ip := range sp.ExternalIPs {
		dispatch(ip, "external IP", ext)
	}
	allow := sp.Firewall.Allow
	for _, ip := range sp.LoadBalancerIPs {
		if len(allow) == 0 {
			dispatch(ip, "loadbalancer IP", ext)
			continue
		}
		for _, src := range allow {
			pr.add(dFilterFirewall, "-s "+src.String()+" "+r.to(sp, ip, sp.Port, name+" loadbalancer IP", "RETURN"))
		}
		pr.add(dFilterFirewall, r.to(sp, ip, sp.Port, name+" traffic not accepted by "+fw, target(sp.Firewall.Outside)))
		dispatch(ip, "loadbalancer IP", fw)
	}
	if forwards && len(allow) > 0 {
		c := &Chain{Name: fw}
		for _, src := range allow {
			c.Rules = append(c.Rules, "-s "+src.String()+" "+comment(name+" loadbalancer IP")+" -j "+ext)
		}
		pr.chains = append(pr.chains, c)
	}
	if sp.NodePort != 0 {
		if forwards {
			pr.add(dNatNodePorts, r.to(sp, netip.Addr{}, sp.NodePort, name, ext))
		}
		if notForwarded != "" {
			pr.add(dFilterNodePorts, r.to(sp, netip.Addr{}, sp.NodePort, name+" node port: no usable endpoint", notForwarded))
		}
	}
}

func (pr *portRules) add(d int, rules ...string) { pr.dispatch[d] = append(pr.dispatch[d], rules...) }

// pools writes a KUBE-SVC or KUBE-SVL chain, with its endpoints' chains,
// for each pool a route forwards to; the chain the ClusterIP's traffic
// enters starts with its masquerade rule.
func (r *renderer) pools(sp *plan.ServicePort) []*Chain {
	var out []*Chain
	in := sp.Internal.Default
	for _, pool := range []plan.Pool{plan.ClusterPool, plan.LocalPool} {
		used := slices.Contains(sp.Internal.Pools(), pool) || slices.Contains(sp.External.Pools(), pool)
		if !used {
			continue
		}
		var first []string
		if in.Action == plan.Forward && in.Pool == pool {
			first = r.clusterMasq(sp, in.Masquerade)
		}
		out = append(out, r.balance(sp, poolChain(sp, pool), sp.Backends(pool), first)...)
	}
	return uniqueChains(out)
}

// clusterMasq writes the masquerading of ClusterIP traffic: a rule matching
// the ClusterIP and port, for every source or those outside the pod
// network. The plan's configuration check keeps that to one prefix.
func (r *renderer) clusterMasq(sp *plan.ServicePort, m plan.Masquerade) []string {
	rule := r.to(sp, sp.ClusterIP, sp.Port, sp.ServicePortName.String()+" cluster IP", chainMarkMasq)
	switch m.Mode {
	case plan.MasqAlways:
		return []string{rule}
	case plan.MasqUnlessFrom:
		return []string{"! -s " + m.Except[0].String() + " " + rule}
	}
	return nil
}

// balance writes a KUBE-SVC or KUBE-SVL chain and its endpoints' chains:
// first rules, the affinity checks, then the statistic cascade giving each
// endpoint an equal share.
func (r *renderer) balance(sp *plan.ServicePort, name string, eps []netip.AddrPort, first []string) []*Chain {
	c := &Chain{Name: name, Rules: first}
	out := []*Chain{c}
	what := sp.ServicePortName.String()
	if sp.AffinitySeconds > 0 {
		for _, ep := range eps {
			sep := sepChain(sp.Key, ep.String())
			c.Rules = append(c.Rules, comment(what+" -> "+ep.String())+" -m recent --rcheck --seconds "+strconv.Itoa(int(sp.AffinitySeconds))+
				" --reap --name "+sep+" --mask "+r.hostMask()+" --rsource -j "+sep)
		}
	}
	for i, ep := range eps {
		sep := sepChain(sp.Key, ep.String())
		c.Rules = append(c.Rules, comment(what+" -> "+ep.String())+pick(sp.Scheduler, len(eps)-i)+" -j "+sep)
		out = append(out, r.endpoint(sp, sep, ep))
	}
	return out
}

// pick writes the statistic match of a cascade rule with left endpoints
// still to choose from. At random: probability 1/left, none for the last.
// Round robin: every left-th new connection that reaches the rule (its
// nth counter is the rule's own), so the cascade takes the endpoints in
// strict turn; the last rule too (every 1), so that a trace sees the turn.
func pick(scheduler string, left int) string {
	switch {
	case scheduler == "rr":
		return " -m statistic --mode nth --every " + strconv.Itoa(left) + " --packet 0"
	case left > 1:
		return " -m statistic --mode random --probability " + strconv.FormatFloat(1/float64(left), 'f', 11, 64)
	}
	return ""
}

func (r *renderer) hostMask() string {
	if r.fam == plan.IPv6 {
		return "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	}
	return "255.255.255.255"
}

// endpoint writes a KUBE-SEP chain: the hairpin mark for an endpoint of
// the plan's hairpin set, then the DNAT.
func (r *renderer) endpoint(sp *plan.ServicePort, name string, ep netip.AddrPort) *Chain {
	what := sp.ServicePortName.String()
	p := protoLower(sp.Key)
	recent := ""
	if sp.AffinitySeconds > 0 {
		recent = " -m recent --set --name " + name + " --mask " + r.hostMask() + " --rsource"
	}
	c := &Chain{Name: name}
	if slices.Contains(sp.Hairpin, ep.Addr()) {
		c.Rules = append(c.Rules, "-s "+hostPrefix(ep.Addr())+" "+comment(what)+" -j "+chainMarkMasq)
	}
	c.Rules = append(c.Rules, "-p "+p+" "+comment(what)+recent+" -m "+p+" -j DNAT --to-destination "+ep.String())
	return c
}

// extChain writes KUBE-EXT from the external route: each bypass behind
// the match of its sources, then the default outcome; what it does not
// forward falls off the end, undNATed, to the filter chains' verdict.
func (r *renderer) extChain(sp *plan.ServicePort, ext string) *Chain {
	what := sp.ServicePortName.String()
	c := &Chain{Name: ext}
	for _, b := range sp.External.Bypasses {
		c.Rules = append(c.Rules, r.forward(sp, b.Outcome, b.From, what)...)
	}
	if d := sp.External.Default; d.Action == plan.Forward {
		c.Rules = append(c.Rules, r.forward(sp, d, plan.Sources{}, what)...)
	}
	return c
}

// forward writes an outcome for traffic from some sources (none: every
// source) to the external addresses: its masquerading, then the jump to
// its pool's chain, with kube-proxy's comments.
func (r *renderer) forward(sp *plan.ServicePort, o plan.Outcome, from plan.Sources, what string) []string {
	var match []string
	masqWhat, jumpWhat := "masquerade traffic for "+what+" external destinations", ""
	switch {
	case from.Node:
		match = []string{"-m addrtype --src-type LOCAL "}
		masqWhat, jumpWhat = "masquerade LOCAL traffic for "+what+" external destinations", "route LOCAL traffic for "+what+" external destinations"
	case len(from.Prefixes) > 0:
		for _, p := range from.Prefixes {
			match = append(match, "-s "+p.String()+" ")
		}
		masqWhat, jumpWhat = "masquerade pod traffic for "+what+" external destinations", "pod traffic for "+what+" external destinations"
	default:
		match = []string{""}
	}
	var rules []string
	for _, m := range match {
		switch o.Masquerade.Mode {
		case plan.MasqAlways:
			rules = append(rules, m+comment(masqWhat)+" -j "+chainMarkMasq)
		case plan.MasqUnlessFrom:
			rules = append(rules, m+"! -s "+o.Masquerade.Except[0].String()+" "+comment(masqWhat)+" -j "+chainMarkMasq)
		}
		jump := m + "-j " + poolChain(sp, o.Pool)
		if jumpWhat != "" {
			jump = m + comment(jumpWhat) + " -j " + poolChain(sp, o.Pool)
		}
		rules = append(rules, jump)
	}
	return rules
}

func uniqueChains(cs []*Chain) []*Chain {
	seen := map[string]bool{}
	return slices.DeleteFunc(cs, func(c *Chain) bool {
		dup := seen[c.Name]
		seen[c.Name] = true
		return dup
	})
}

// nodePortTail is the end of nat KUBE-SERVICES and filter
// KUBE-EXTERNAL-SERVICES: the jumps to KUBE-NODEPORTS, which must stay last.
func (r *renderer) nodePortTail(n plan.NodePortAddrs) []string {
	loop := "127.0.0.0/8"
	if r.fam == plan.IPv6 {
		loop = "::1/128"
	}
	var np []string
	if n.AnyLocal {
		notLoopback := "! -d " + loop + " "
		if n.Loopback {
			notLoopback = ""
		}
		np = append(np, notLoopback+comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")+" -m addrtype --dst-type LOCAL -j "+chainNodePorts)
	}
	for _, ip := range n.IPs {
		np = append(np, "-d "+hostPrefix(ip)+" "+comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")+" -j "+chainNodePorts)
	}
	return np
}

// localnetFirewall is kube-proxy's KUBE-FIREWALL rule, written in IPv4
// when NodePorts answer on loopback: route_localnet=1, which they need,
// would also let in packets for 127.0.0.0/8 from other hosts
// (CVE-2020-8558); this drops them unless they are replies or were
// DNATed (a NodePort on 127.0.0.1 from the node itself is neither
// dropped: its source is loopback).
var localnetFirewall = "! -s 127.0.0.0/8 -d 127.0.0.0/8 " + comment("block incoming localnet connections") + " -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"

// rejectRule is filter KUBE-SERVICES's catch-all for undefined ports of a
// ClusterIP; these end that chain, one per ClusterIP, sorted.
func rejectRule(ip netip.Addr) string {
	return "-d " + hostPrefix(ip) + " " + comment("cluster IP without such a service port") + " -j REJECT"
}

// fixedChainRules are the chains with the same rules on every node.
func fixedChainRules(mark string) map[dispatch][]string {
	return map[dispatch][]string{
		{"nat", chainMarkMasq}: {"-j MARK --or-mark " + mark},
		{"nat", chainPostrouting}: {
			"-m mark ! --mark " + mark + "/" + mark + " -j RETURN",
			"-j MARK --xor-mark " + mark,
			comment("kubernetes service traffic requiring SNAT") + " -j MASQUERADE --random-fully",
		},
		{"filter", chainForward}: {
			comment("kubernetes forwarding rules") + " -m mark --mark " + mark + "/" + mark + " -j ACCEPT",
			comment("kubernetes forwarding conntrack rule") + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
			comment("forwarded traffic the proxy DNATed") + " -m conntrack --ctstate DNAT -j ACCEPT",
		},
	}
}

// jump is a rule in a built-in chain that enters ours.
type jump struct{ table, chain, rule string }

var jumps = []jump{
	{"nat", "PREROUTING", comment("kubernetes service portals") + " -j " + chainServices},
	{"nat", "OUTPUT", comment("kubernetes service portals") + " -j " + chainServices},
	{"nat", "POSTROUTING", comment("kubernetes postrouting rules") + " -j " + chainPostrouting},
	{"filter", "INPUT", "-m conntrack --ctstate NEW " + comment("kubernetes load balancer firewall") + " -j " + chainFirewall},
	{"filter", "INPUT", "-m conntrack --ctstate NEW " + comment("kubernetes externally-visible service portals") + " -j " + chainExternalServices},
	{"filter", "FORWARD", "-m conntrack --ctstate NEW " + comment("kubernetes load balancer firewall") + " -j " + chainFirewall},
	{"filter", "FORWARD", "-m conntrack --ctstate NEW " + comment("kubernetes service portals") + " -j " + chainServices},
	{"filter", "FORWARD", "-m conntrack --ctstate NEW " + comment("kubernetes externally-visible service portals") + " -j " + chainExternalServices},
	{"filter", "FORWARD", comment("kubernetes forwarding rules") + " -j " + chainForward},
	{"filter", "OUTPUT", "-m conntrack --ctstate NEW " + comment("kubernetes load balancer firewall") + " -j " + chainFirewall},
	{"filter", "OUTPUT", "-m conntrack --ctstate NEW " + comment("kubernetes service portals") + " -j " + chainServices},
}
