package ipvs

import (
	"fmt"
	"slices"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// The iptables glue kube-proxy pairs with IPVS, in one family: rules over
// the sets, nearly the same on every node. Only the masquerading of
// ClusterIP traffic and the bypass marks depend on the plan.

// The chains of the glue. The first five are also the iptables mode's
// names; the others are only this mode's.
const (
	chainServices      = "KUBE-SERVICES"
	chainPostrouting   = "KUBE-POSTROUTING"
	chainMarkMasq      = "KUBE-MARK-MASQ"
	chainFirewall      = "KUBE-PROXY-FIREWALL"
	chainForward       = "KUBE-FORWARD"
	chainBypass        = "KUBE-EXTERNAL-BYPASS"
	chainNodePort      = "KUBE-NODE-PORT"
	chainSourceRanges  = "KUBE-SOURCE-RANGES-FIREWALL"
	chainFilter        = "KUBE-IPVS-FILTER"
	chainLocal         = "KUBE-IPVS-LOCAL"
	tableNat, tableFlt = "nat", "filter"
	tableMangle        = "mangle"
)

// glueTables are the tables of the glue, in the order a transaction
// writes them.
var glueTables = []string{tableMangle, tableFlt, tableNat}

// ownChains are the chains only this mode writes: where one exists, the
// shared names are this mode's too (see Cleanup).
var ownChains = []string{chainBypass, chainNodePort, chainSourceRanges, chainFilter, chainLocal}

// glueChain is one chain of the glue.
type glueChain struct {
	table string
	chain iptables.Chain
}

// glueJump is a rule of a built-in chain entering the glue.
type glueJump struct{ table, chain, rule string }

// glueJumps enter the glue. The source-range firewall is in mangle, where
// kube-proxy has it in filter: IPVS takes the node's own packets in
// LOCAL_OUT before filter OUTPUT, which would only see them sent on to an
// endpoint, unfiltered.
var glueJumps = []glueJump{
	{tableMangle, "PREROUTING", "-m conntrack --ctstate NEW " + comment("kubernetes load balancer firewall") + " -j " + chainFirewall},
	{tableMangle, "PREROUTING", comment("kubernetes external service ports taken in") + " -j " + chainLocal},
	{tableMangle, "OUTPUT", "-m conntrack --ctstate NEW " + comment("kubernetes load balancer firewall") + " -j " + chainFirewall},
	{tableMangle, "OUTPUT", comment("kubernetes external service ports taken in") + " -j " + chainLocal},
	{tableNat, "PREROUTING", comment("kubernetes service portals") + " -j " + chainServices},
	{tableNat, "OUTPUT", comment("kubernetes service portals") + " -j " + chainServices},
	{tableNat, "POSTROUTING", comment("kubernetes postrouting rules") + " -j " + chainPostrouting},
	{tableFlt, "INPUT", "-m conntrack --ctstate NEW " + comment("kubernetes ipvs access filter") + " -j " + chainFilter},
	{tableFlt, "FORWARD", comment("kubernetes forwarding rules") + " -j " + chainForward},
	{tableFlt, "OUTPUT", "-m conntrack --ctstate NEW " + comment("kubernetes ipvs access filter") + " -j " + chainFilter},
}

// glueChains renders the chains of family f. masq is the masquerading of
// forwarded ClusterIP traffic (nil: none is forwarded), bypass the
// KUBE-EXTERNAL-BYPASS rules.
func glueChains(f plan.Family, m marks, masq *plan.Masquerade, bypass []string) []glueChain {
	set := func(base, dirs string) string { return "-m set --match-set " + setName(f, base) + " " + dirs }
	markHex, localHex := fmt.Sprintf("%#x", m.masq), fmt.Sprintf("%#x", m.local)
	services := []string{comment("kubernetes service bypasses") + " -j " + chainBypass}
	if masq != nil {
		switch masq.Mode {
		case plan.MasqAlways:
			services = append(services, comment("Kubernetes service cluster ip + port for masquerade purpose")+" "+set(setClusterIP, "dst,dst")+" -j "+chainMarkMasq)
		case plan.MasqUnlessFrom:
			services = append(services, "! -s "+masq.Except[0].String()+" "+comment("Kubernetes service cluster ip + port for masquerade purpose")+" "+set(setClusterIP, "dst,dst")+" -j "+chainMarkMasq)
		}
	}
	services = append(services,
		comment("Kubernetes service external ip + port for masquerade")+" "+set(setExternalIP, "dst,dst")+" -j "+chainMarkMasq,
		comment("Kubernetes service lb portal")+" "+set(setLoadBalancer, "dst,dst")+" -j "+chainMarkMasq,
		"-m addrtype --dst-type LOCAL -j "+chainNodePort)
	var nodePort []string
	for _, p := range []Protocol{TCP, UDP, SCTP} {
		lp, dirs := lower(p), "dst"
		if setTypes[nodePortSet[p]] != BitmapPort {
			dirs = "dst,dst"
		}
		// The mark itself, not a jump to KUBE-MARK-MASQ, which the
		// iptables mode's cleanup would cut out of this chain.
		nodePort = append(nodePort, "-p "+lp+" "+comment("Kubernetes nodeport "+lp+" port for masquerade purpose")+" "+set(nodePortSet[p], dirs)+" -j MARK --set-xmark "+markHex+"/"+markHex)
	}
	return []glueChain{
		{tableMangle, iptables.Chain{Name: chainLocal, Rules: []string{
			comment("external service ports: the node takes them in") + " " + set(setExternal, "dst,dst") + " -j MARK --set-xmark " + localHex + "/" + localHex,
			// What IPVS sends on to a real server passes LOCAL_OUT with
			// the client packet's mark, and is routed again (nat OUTPUT,
			// mangle here): without the local bit, or the local table
			// would take it in again.
			"-m mark --mark " + localHex + "/" + localHex + " -m set ! --match-set " + setName(f, setExternal) + " dst,dst " +
				comment("sent on by IPVS: routed as any other") + " -j MARK --set-xmark 0x0/" + localHex,
		}}},
		{tableNat, iptables.Chain{Name: chainServices, Rules: services}},
		{tableNat, iptables.Chain{Name: chainBypass, Rules: bypass}},
		{tableNat, iptables.Chain{Name: chainNodePort, Rules: nodePort}},
		{tableNat, iptables.Chain{Name: chainMarkMasq, Rules: []string{"-j MARK --set-xmark " + markHex + "/" + markHex}}},
		{tableNat, iptables.Chain{Name: chainPostrouting, Rules: []string{
			comment("Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose") + " " + set(setLoopBack, "dst,dst,src") + " -j MASQUERADE",
			"-m mark ! --mark " + markHex + "/" + markHex + " -j RETURN",
			"-j MARK --set-xmark " + markHex + "/0x0",
			comment("kubernetes service traffic requiring SNAT") + " -j MASQUERADE --random-fully",
		}}},
		{tableMangle, iptables.Chain{Name: chainFirewall, Rules: []string{
			comment("Kubernetes service load balancer ip + port for load balancer with sourceRange") + " " + set(setLBFirewall, "dst,dst") + " -j " + chainSourceRanges,
		}}},
		{tableMangle, iptables.Chain{Name: chainSourceRanges, Rules: []string{
			comment("Kubernetes service load balancer ip + port + source cidr for packet filter purpose") + " " + set(setLBSourceCIDR, "dst,dst,src") + " -j RETURN",
			comment("source not in the load balancer's source ranges") + " -j DROP",
		}}},
		{tableFlt, iptables.Chain{Name: chainFilter, Rules: []string{
			fmt.Sprintf("-m mark --mark %#x/%#x %s -j RETURN", m.bypass, m.bypass, comment("bypass traffic uses every endpoint")),
			comment("service traffic to drop") + " " + set(setDrop, "dst,dst") + " -j DROP",
			comment("service traffic to reject") + " " + set(setReject, "dst,dst") + " -j REJECT --reject-with " + rejectWith(f),
		}}},
		{tableFlt, iptables.Chain{Name: chainForward, Rules: []string{
			comment("kubernetes forwarding rules") + " -m mark --mark " + markHex + "/" + markHex + " -j ACCEPT",
			comment("kubernetes forwarding conntrack rule") + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		}}},
	}
}

func rejectWith(f plan.Family) string {
	if f == plan.IPv6 {
		return "icmp6-port-unreachable"
	}
	return "icmp-port-unreachable"
}

func lower(p Protocol) string {
	return map[Protocol]string{TCP: "tcp", UDP: "udp", SCTP: "sctp"}[p]
}

// isGlueChain reports whether a chain is one the glue writes.
func isGlueChain(name string) bool {
	switch name {
	case chainServices, chainPostrouting, chainMarkMasq, chainFirewall, chainForward:
		return true
	}
	return slices.Contains(ownChains, name)
}

// glueTransaction writes the chains (each declared, so emptied, then
// filled) and puts the jumps into them first in the built-in chains,
// deleting any earlier jumps to them there.
func glueTransaction(existing map[string]*iptables.Table, chains []glueChain) *iptables.Transaction {
	tx := &iptables.Transaction{}
	for _, c := range chains {
		ch := c.chain
		tx.Write(c.table, &ch)
	}
	deleteJumps(tx, existing)
	pos := map[string]int{}
	for _, j := range glueJumps {
		pos[j.table+" "+j.chain]++
		tx.Insert(j.table, j.chain, pos[j.table+" "+j.chain], j.rule)
	}
	return tx
}

// deleteJumps deletes every rule of a built-in chain that jumps to a glue
// chain.
func deleteJumps(tx *iptables.Transaction, existing map[string]*iptables.Table) {
	for _, table := range glueTables {
		iptables.DeleteJumps(tx, table, existing[table], isGlueChain)
	}
}

// cleanupTransaction deletes the glue: the jumps into it, then its chains.
// The chains the iptables mode shares are left alone unless one of this
// mode's own chains is there, so that cleaning up after ipvs does not
// remove a running iptables mode's rules.
func cleanupTransaction(existing map[string]*iptables.Table) *iptables.Transaction {
	tx := &iptables.Transaction{}
	if !hasOwnChains(existing) {
		return tx
	}
	iptables.RemoveChains(tx, existing, glueTables, isGlueChain)
	return tx
}

// hasOwnChains reports whether tables hold a chain only this mode writes.
func hasOwnChains(tables map[string]*iptables.Table) bool {
	for _, t := range tables {
		for _, c := range ownChains {
			if t.Chains[c] != nil {
				return true
			}
		}
	}
	return false
}
