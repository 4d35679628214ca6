package iptables

import (
	"context"
	"maps"
	"net/netip"
	"slices"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// partialSync writes only what the changed service ports changed: their
// chains whose rules differ (declared, so emptied, and rewritten), their
// rules in the dispatch chains (deleted by specification and inserted at
// their position, the order a full sync writes), the ClusterIP rejects that
// appear or go, and the deletion of their chains no longer needed. It reads
// nothing from the kernel. The state changes in place; if the sync fails,
// the family forgets it and the next sync is full.
func (d *Dataplane) partialSync(ctx context.Context, k Kernel, r *renderer, p *plan.Plan, ch plan.Changes) error {
	st := d.state[r.fam]
	var keys []plan.Key
	for key := range ch.Keys {
		if key.Family == r.fam {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, plan.Key.Compare)
	next := make(map[plan.Key]*portRules, len(keys))
	for _, key := range keys {
		if sp := p.Ports[key]; sp != nil {
			next[key] = r.port(sp)
		}
	}
	tx := &Transaction{}
	inserted := st.editPorts(tx, keys, next)
	added := st.editClusterIPs(tx, keys, next)
	st.commit(keys, next)
	st.insertDispatch(tx, inserted, added)
	if tx.Empty() {
		return nil
	}
	return d.apply(ctx, k, r.fam, tx)
}

// editPorts writes, for each changed port, its chains that are new or
// whose rules differ, deletes those it no longer has, and deletes its old
// rules from the dispatch chains whose rules it changes; it returns, per
// dispatch chain, the ports whose new rules are to be inserted.
func (st *famState) editPorts(tx *Transaction, keys []plan.Key, next map[plan.Key]*portRules) (inserted [nDispatch]map[plan.Key]bool) {
	for _, k := range keys {
		old, nw := st.ports[k], next[k]
		editChains(tx, old.chainList(), nw.chainList())
		for i, dc := range dispatchChains {
			o, n := old.rules(i), nw.rules(i)
			if slices.Equal(o, n) {
				continue
			}
			for _, rule := range o {
				tx.Delete(dc.table, dc.chain, rule)
			}
			if len(n) > 0 {
				if inserted[i] == nil {
					inserted[i] = map[plan.Key]bool{}
				}
				inserted[i][k] = true
			}
		}
	}
	return inserted
}

// editChains rewrites the chains of next that are new or differ from
// prev's, and deletes prev's that next lacks.
func editChains(tx *Transaction, prev, next []*Chain) {
	old := map[string]*Chain{}
	for _, c := range prev {
		old[c.Name] = c
	}
	for _, c := range next {
		if oc := old[c.Name]; oc == nil || !slices.Equal(oc.Rules, c.Rules) {
			tx.Write("nat", c)
		}
		delete(old, c.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(old)) {
		tx.Declare("nat", name)
		tx.DeleteChain("nat", name)
	}
}

// editClusterIPs recounts the ports of each ClusterIP the changed ports
// had or have, deletes the reject rule of a ClusterIP that went, and
// returns those that came, whose rules insertDispatch places.
func (st *famState) editClusterIPs(tx *Transaction, keys []plan.Key, next map[plan.Key]*portRules) (added []netip.Addr) {
	touched := map[netip.Addr]bool{}
	for _, k := range keys {
		if old := st.ports[k]; old != nil {
			st.cipRefs[old.clusterIP]--
			touched[old.clusterIP] = true
		}
		if nw := next[k]; nw != nil {
			st.cipRefs[nw.clusterIP]++
			touched[nw.clusterIP] = true
		}
	}
	for _, ip := range slices.SortedFunc(maps.Keys(touched), netip.Addr.Compare) {
		i, present := slices.BinarySearchFunc(st.cips, ip, netip.Addr.Compare)
		switch now := st.cipRefs[ip] > 0; {
		case present && !now:
			tx.Delete("filter", chainServices, rejectRule(ip))
			st.cips = slices.Delete(st.cips, i, i+1)
		case !present && now:
			added = append(added, ip)
			st.cips = slices.Insert(st.cips, i, ip)
		}
		if st.cipRefs[ip] <= 0 {
			delete(st.cipRefs, ip)
		}
	}
	return added
}

// commit makes the changed ports' new rules the state's.
func (st *famState) commit(keys []plan.Key, next map[plan.Key]*portRules) {
	for _, k := range keys {
		i, found := slices.BinarySearchFunc(st.keys, k, plan.Key.Compare)
		switch nw := next[k]; {
		case nw == nil && found:
			delete(st.ports, k)
			st.keys = slices.Delete(st.keys, i, i+1)
		case nw != nil:
			st.ports[k] = nw
			if !found {
				st.keys = slices.Insert(st.keys, i, k)
			}
		}
	}
}

// insertDispatch inserts the new dispatch rules of the ports in inserted,
// and the rejects of the ClusterIPs added, at the positions a full sync
// gives them, in ascending order, after all deletions.
func (st *famState) insertDispatch(tx *Transaction, inserted [nDispatch]map[plan.Key]bool, added []netip.Addr) {
	for i, dc := range dispatchChains {
		if inserted[i] == nil && (i != dFilterServices || len(added) == 0) {
			continue
		}
		pos := 0
		for _, k := range st.keys {
			block := st.ports[k].dispatch[i]
			if inserted[i][k] {
				for j, rule := range block {
					tx.Insert(dc.table, dc.chain, pos+j+1, rule)
				}
			}
			pos += len(block)
		}
		if i != dFilterServices {
			continue
		}
		for _, ip := range added {
			j, _ := slices.BinarySearchFunc(st.cips, ip, netip.Addr.Compare)
			tx.Insert(dc.table, dc.chain, pos+j+1, rejectRule(ip))
		}
	}
}

// chainList and rules read a port's chains and dispatch rules; a missing
// port has none.
func (pr *portRules) chainList() []*Chain {
	if pr == nil {
		return nil
	}
	return pr.chains
}

func (pr *portRules) rules(i int) []string {
	if pr == nil {
		return nil
	}
	return pr.dispatch[i]
}
