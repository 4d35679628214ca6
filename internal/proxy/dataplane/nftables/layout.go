package nftables

import (
	"fmt"

	"sigs.k8s.io/knftables"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// baseChain is a chain attached to a netfilter hook.
type baseChain struct {
	name     string
	typ      knftables.BaseChainType
	hook     knftables.BaseChainHook
	priority knftables.BaseChainPriority
	rules    []string
}

// fixed is the part of the table that does not depend on Services: base
// chains, dispatch chains and the shared maps and sets. See README.md for
// the picture.
type fixed struct {
	base    []baseChain
	regular []chainDef
	maps    []*knftables.Map
	sets    []*knftables.Set
	elems   []elemDef // nodeport-ips, from configuration
}

func (r *renderer) fixed(nodePortAddrs plan.NodePortAddrs, masqBit uint) *fixed {
	w := r.w
	mark := fmt.Sprintf("%#x", uint32(1)<<masqBit)
	vipKey := w.addrType + " . inet_proto . inet_service"
	npKey := "inet_proto . inet_service"
	ctNew := "ct state new jump "

	x := &fixed{
		base: []baseChain{
			{chainFilterPrerouting, knftables.FilterType, knftables.PreroutingHook, "-110", []string{ctNew + chainFirewallCheck}},
			{chainFilterOutput, knftables.FilterType, knftables.OutputHook, "-110", []string{ctNew + chainFirewallCheck}},
			{chainNatPrerouting, knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority, []string{"jump " + chainServices}},
			{chainNatOutput, knftables.NATType, knftables.OutputHook, knftables.DNATPriority, []string{"jump " + chainServices}},
			{chainNatPostrouting, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority, []string{"jump " + chainMasquerading}},
			{chainFilterInput, knftables.FilterType, knftables.InputHook, knftables.FilterPriority, []string{ctNew + chainEndpointsCheck}},
			{chainFilterForward, knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority, []string{ctNew + chainEndpointsCheck}},
			{chainFilterOutputPost, knftables.FilterType, knftables.OutputHook, "-90", []string{ctNew + chainEndpointsCheck}},
		},
		maps: []*knftables.Map{
			{Name: mapServiceIPs, Type: vipKey + " : verdict", Comment: ptr("ClusterIP, external and load-balancer IP dispatch")},
			{Name: mapServiceNodePorts, Type: npKey + " : verdict", Comment: ptr("NodePort dispatch")},
			{Name: mapNoEndpointIPs, Type: vipKey + " : verdict", Comment: ptr("service addresses to reject or drop")},
			{Name: mapNoEndpointNodePts, Type: npKey + " : verdict", Comment: ptr("NodePorts to reject or drop")},
			{Name: mapFirewallIPs, Type: vipKey + " : verdict", Comment: ptr("load-balancer IPs with source ranges")},
		},
		sets: []*knftables.Set{
			{Name: setClusterIPs, Type: w.addrType, Comment: ptr("every ClusterIP, to reject undefined ports")},
			{Name: setHairpin, Type: w.addrType + " . " + w.addrType, Comment: ptr("endpoint . endpoint: a pod reaching itself")},
		},
	}
	nodePorts := r.nodePortMatch(nodePortAddrs)
	if !nodePortAddrs.AnyLocal {
		x.sets = append(x.sets, &knftables.Set{Name: setNodePortIPs, Type: w.addrType, Comment: ptr("nodePortAddresses")})
		for _, ip := range nodePortAddrs.IPs {
			x.elems = append(x.elems, elemDef{into: setNodePortIPs, key: ip.String()})
		}
	}
	x.regular = []chainDef{
		{chainFirewallCheck, []string{w.ip + " daddr . meta l4proto . th dport vmap @" + mapFirewallIPs}},
		{chainServices, []string{
			w.ip + " daddr . meta l4proto . th dport vmap @" + mapServiceIPs,
			nodePorts + " jump " + chainNodePorts,
		}},
		{chainNodePorts, []string{"meta l4proto . th dport vmap @" + mapServiceNodePorts}},
		{chainEndpointsCheck, []string{
			w.ip + " daddr . meta l4proto . th dport vmap @" + mapNoEndpointIPs,
			nodePorts + " meta l4proto . th dport vmap @" + mapNoEndpointNodePts,
			w.ip + " daddr @" + setClusterIPs + " reject",
		}},
		{chainMarkMasq, []string{"meta mark set meta mark | " + mark}},
		{chainMasquerading, []string{
			"ct status dnat " + w.ip + " saddr . " + w.ip + " daddr @" + setHairpin + " jump " + chainMarkMasq,
			"meta mark & " + mark + " == 0 return",
			"meta mark set meta mark ^ " + mark,
			"masquerade fully-random",
		}},
		{chainReject, []string{"reject"}},
	}
	return x
}

// nodePortMatch matches the node addresses that accept NodePorts: every
// local one (loopback only if the plan says so), or those of the
// nodeport-ips set.
func (r *renderer) nodePortMatch(n plan.NodePortAddrs) string {
	switch {
	case !n.AnyLocal:
		return fmt.Sprintf("%s daddr @%s", r.w.ip, setNodePortIPs)
	case n.Loopback:
		return "fib daddr type local"
	}
	return fmt.Sprintf("fib daddr type local %s daddr != %s", r.w.ip, r.w.loopback)
}

// endpointMaps are the shared maps from a destination and a random index to
// an endpoint, of one generation, one per protocol and typed with that
// protocol's port: nft 1.0 cannot read back a key typed
// "meta l4proto . th dport", nor match a rule against "th dport" once it has.
func endpointMaps(w words, gen int) []*knftables.Map {
	var out []*knftables.Map
	for _, m := range endpointMapList {
		value := " : " + w.ip + " daddr . " + m.proto + " dport"
		key := w.ip + " daddr . " + m.proto + " dport . numgen random mod 2"
		what := "address . port . index -> endpoint"
		if m.byPort {
			key = m.proto + " dport . numgen random mod 2"
			what = "NodePort . index -> endpoint"
		}
		if m.base == mapClusterEndpoints || m.base == mapNodePortClusterEndpoints {
			what += ", Local policy, from pods and the node"
		}
		out = append(out, &knftables.Map{Name: m.name(gen), TypeOf: key + value, Comment: ptr(m.proto + ": " + what)})
	}
	return out
}

func ptr[T any](v T) *T { return &v }
