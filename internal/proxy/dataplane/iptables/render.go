package iptables

import (
	"fmt"
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
	fam          plan.Family
	clusterCIDRs []netip.Prefix
	masqAll      bool
}

func newRenderer(p *plan.Plan, f plan.Family) (*renderer, error) {
	r := &renderer{fam: f, clusterCIDRs: p.Config.ClusterCIDRsOf(f), masqAll: p.Config.MasqueradeAll}
	if len(r.clusterCIDRs) > 1 {
		return nil, fmt.Errorf("iptables: %d cluster CIDRs of family %s; one is supported", len(r.clusterCIDRs), f)
	}
	return r, nil
}

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

func (r *renderer) port(sp *plan.ServicePort) *portRules {
	pr := &portRules{clusterIP: sp.ClusterIP}
	add := func(d int, rules ...string) { pr.dispatch[d] = append(pr.dispatch[d], rules...) }
	name := sp.ServicePortName.String()
	svc, svl, ext, fw := portChain(prefixSVC, sp.Key), portChain(prefixSVL, sp.Key), portChain(prefixEXT, sp.Key), portChain(prefixFW, sp.Key)
	has := sp.HasEndpoints()
	hasSVC := has && (!sp.InternalLocal || sp.HasExternal())
	hasSVL := sp.UsesLocal() && len(sp.LocalEndpoints) > 0
	internal := svc
	if sp.InternalLocal {
		internal = svl
	}
	masqRule := r.clusterMasq(sp)
	if hasSVC {
		pr.chains = append(pr.chains, r.balance(sp, svc, sp.ClusterEndpoints, masqRule, internal == svc)...)
	}
	if hasSVL {
		pr.chains = append(pr.chains, r.balance(sp, svl, sp.LocalEndpoints, masqRule, internal == svl)...)
	}
	pr.chains = uniqueChains(pr.chains)

	// ClusterIP.
	switch {
	case !has:
		add(dFilterServices, r.to(sp, sp.ClusterIP, sp.Port, name+" has no endpoints", "REJECT"))
	case len(sp.InternalEndpoints()) == 0:
		add(dFilterServices, r.to(sp, sp.ClusterIP, sp.Port, name+" has no local endpoints", "DROP"))
	default:
		add(dNatServices, r.to(sp, sp.ClusterIP, sp.Port, name+" cluster IP", internal))
	}
	if !sp.HasExternal() {
		return pr
	}
	// External addresses.
	extVerdict := ""
	switch {
	case !has:
		extVerdict = "REJECT"
	case sp.ExternalLocal && len(sp.LocalEndpoints) == 0:
		extVerdict = "DROP"
	}
	if has {
		pr.chains = append(pr.chains, r.extChain(sp, ext, svc, svl, hasSVL))
	}
	for _, ip := range sp.ExternalIPs {
		if has {
			add(dNatServices, r.to(sp, ip, sp.Port, name+" external IP", ext))
		}
		if extVerdict != "" {
			add(dFilterExternal, r.to(sp, ip, sp.Port, name+" external IP: no usable endpoint", extVerdict))
		}
	}
	for _, ip := range sp.LoadBalancerIPs {
		lbTarget := ext
		if len(sp.SourceRanges) > 0 {
			lbTarget = fw
			for _, src := range sp.SourceRanges {
				add(dFilterFirewall, "-s "+src.String()+" "+r.to(sp, ip, sp.Port, name+" loadbalancer IP", "RETURN"))
			}
			add(dFilterFirewall, r.to(sp, ip, sp.Port, name+" traffic not accepted by "+fw, "DROP"))
		}
		if has {
			add(dNatServices, r.to(sp, ip, sp.Port, name+" loadbalancer IP", lbTarget))
		}
		if extVerdict != "" {
			add(dFilterExternal, r.to(sp, ip, sp.Port, name+" loadbalancer IP: no usable endpoint", extVerdict))
		}
	}
	if has && len(sp.LoadBalancerIPs) > 0 && len(sp.SourceRanges) > 0 {
		c := &Chain{Name: fw}
		for _, src := range sp.SourceRanges {
			c.Rules = append(c.Rules, "-s "+src.String()+" "+comment(name+" loadbalancer IP")+" -j "+ext)
		}
		pr.chains = append(pr.chains, c)
	}
	if sp.NodePort != 0 {
		if has {
			add(dNatNodePorts, r.to(sp, netip.Addr{}, sp.NodePort, name, ext))
		}
		if extVerdict != "" {
			add(dFilterNodePorts, r.to(sp, netip.Addr{}, sp.NodePort, name+" node port: no usable endpoint", extVerdict))
		}
	}
	return pr
}

// clusterMasq is the rule that marks ClusterIP traffic for masquerading,
// or "" when none is.
func (r *renderer) clusterMasq(sp *plan.ServicePort) string {
	rule := r.to(sp, sp.ClusterIP, sp.Port, sp.ServicePortName.String()+" cluster IP", chainMarkMasq)
	switch {
	case r.masqAll:
		return rule
	case len(r.clusterCIDRs) == 1:
		return "! -s " + r.clusterCIDRs[0].String() + " " + rule
	}
	return ""
}

// balance writes a KUBE-SVC or KUBE-SVL chain and its endpoints' chains:
// the affinity checks, then the statistic cascade giving each endpoint an
// equal share.
func (r *renderer) balance(sp *plan.ServicePort, name string, eps []netip.AddrPort, masqRule string, internal bool) []*Chain {
	c := &Chain{Name: name}
	if internal && masqRule != "" {
		c.Rules = append(c.Rules, masqRule)
	}
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
		stat := ""
		if left := len(eps) - i; left > 1 {
			stat = " -m statistic --mode random --probability " + strconv.FormatFloat(1/float64(left), 'f', 11, 64)
		}
		c.Rules = append(c.Rules, comment(what+" -> "+ep.String())+stat+" -j "+sep)
		out = append(out, r.endpoint(sp, sep, ep))
	}
	return out
}

func (r *renderer) hostMask() string {
	if r.fam == plan.IPv6 {
		return "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	}
	return "255.255.255.255"
}

// endpoint writes a KUBE-SEP chain: the hairpin mark, then the DNAT.
func (r *renderer) endpoint(sp *plan.ServicePort, name string, ep netip.AddrPort) *Chain {
	what := sp.ServicePortName.String()
	p := protoLower(sp.Key)
	recent := ""
	if sp.AffinitySeconds > 0 {
		recent = " -m recent --set --name " + name + " --mask " + r.hostMask() + " --rsource"
	}
	return &Chain{Name: name, Rules: []string{
		"-s " + hostPrefix(ep.Addr()) + " " + comment(what) + " -j " + chainMarkMasq,
		"-p " + p + " " + comment(what) + recent + " -m " + p + " -j DNAT --to-destination " + ep.String(),
	}}
}

// extChain writes KUBE-EXT: external traffic masqueraded under the Cluster
// policy; under Local, the node's own and pods' traffic use every endpoint
// (the node's masqueraded) and the rest the local ones.
func (r *renderer) extChain(sp *plan.ServicePort, ext, svc, svl string, hasSVL bool) *Chain {
	what := sp.ServicePortName.String()
	c := &Chain{Name: ext}
	if !sp.ExternalLocal {
		c.Rules = []string{comment("masquerade traffic for "+what+" external destinations") + " -j " + chainMarkMasq, "-j " + svc}
		return c
	}
	c.Rules = append(c.Rules,
		"-m addrtype --src-type LOCAL "+comment("masquerade LOCAL traffic for "+what+" external destinations")+" -j "+chainMarkMasq,
		"-m addrtype --src-type LOCAL "+comment("route LOCAL traffic for "+what+" external destinations")+" -j "+svc)
	for _, cidr := range r.clusterCIDRs {
		c.Rules = append(c.Rules, "-s "+cidr.String()+" "+comment("pod traffic for "+what+" external destinations")+" -j "+svc)
	}
	if hasSVL {
		c.Rules = append(c.Rules, "-j "+svl)
	}
	return c
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
func (r *renderer) nodePortTail(p *plan.Plan) []string {
	ips, anyLocal := p.Config.NodePortIPs(r.fam)
	loop := "127.0.0.0/8"
	if r.fam == plan.IPv6 {
		loop = "::1/128"
	}
	var np []string
	if anyLocal {
		notLoopback := "! -d " + loop + " "
		if p.Config.NodePortsOnLoopback(r.fam) {
			notLoopback = ""
		}
		np = append(np, notLoopback+comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")+" -m addrtype --dst-type LOCAL -j "+chainNodePorts)
	}
	for _, ip := range ips {
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
