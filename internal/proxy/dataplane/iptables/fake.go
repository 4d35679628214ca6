package iptables

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// builtins are the built-in chains of the tables this dataplane and the
// IPVS dataplane's glue use.
var builtins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
}

// targets that are not chains.
var standardTargets = map[string]bool{"ACCEPT": true, "DROP": true, "REJECT": true, "RETURN": true, "DNAT": true, "MASQUERADE": true, "MARK": true}

// Fake is an in-memory Kernel (backend "nft"). Restore applies a
// Transaction value as strictly as iptables-restore: a rule appended or
// inserted into a missing chain, a jump to a missing chain, deleting a
// missing rule, deleting a chain that is not empty: each fails the table,
// which is then left as it was. Last keeps the last transaction applied
// to each family, so a test can see what a sync sent.
type Fake struct {
	mu     sync.Mutex
	tables map[plan.Family]map[string]*Table
	last   map[plan.Family]*Transaction
}

// NewFake returns an empty fake kernel.
func NewFake() *Fake {
	return &Fake{tables: map[plan.Family]map[string]*Table{}, last: map[plan.Family]*Transaction{}}
}

// Backend implements Kernel.
func (f *Fake) Backend() string { return "nft" }

// Save implements Kernel: a copy of family fam's tables.
func (f *Fake) Save(_ context.Context, fam plan.Family) (map[string]*Table, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]*Table{}
	for name, t := range f.tables[fam] {
		out[name] = cloneTable(t, name)
	}
	return out, nil
}

// Restore implements Kernel.
func (f *Fake) Restore(_ context.Context, fam plan.Family, tx *Transaction) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last[fam] = tx
	if f.tables[fam] == nil {
		f.tables[fam] = map[string]*Table{}
	}
	for _, change := range tx.Tables() {
		t := cloneTable(f.tables[fam][change.Table], change.Table)
		if err := applyChange(t, change); err != nil {
			return fmt.Errorf("fake %s restore, table %s: %w", fam, change.Table, err)
		}
		f.tables[fam][change.Table] = t
	}
	return nil
}

// Last returns the last transaction applied to family fam, or nil.
func (f *Fake) Last(fam plan.Family) *Transaction {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last[fam]
}

// Dump prints family fam's tables as iptables-save does.
func (f *Fake) Dump(fam plan.Family) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(f.tables[fam])) {
		t := f.tables[fam][name]
		fmt.Fprintf(&b, "*%s\n", name)
		for _, c := range t.Order {
			policy := "-"
			if slices.Contains(builtins[name], c) {
				policy = "ACCEPT"
			}
			fmt.Fprintf(&b, ":%s %s [0:0]\n", c, policy)
		}
		for _, c := range t.Order {
			for _, r := range t.Chains[c].Rules {
				fmt.Fprintf(&b, "-A %s %s\n", c, r)
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// cloneTable copies a table; a missing one starts with its built-in chains.
func cloneTable(old *Table, name string) *Table {
	t := &Table{Name: name, Chains: map[string]*Chain{}}
	if old == nil {
		for _, c := range builtins[name] {
			t.Order = append(t.Order, c)
			t.Chains[c] = &Chain{Name: c}
		}
		return t
	}
	t.Order = slices.Clone(old.Order)
	for n, c := range old.Chains {
		t.Chains[n] = &Chain{Name: n, Rules: slices.Clone(c.Rules)}
	}
	return t
}

// applyChange applies one table's change in iptables-restore's order.
func applyChange(t *Table, c *TableChange) error {
	for _, name := range c.Declare {
		if ch := t.Chains[name]; ch != nil {
			ch.Rules = nil
			continue
		}
		t.Order = append(t.Order, name)
		t.Chains[name] = &Chain{Name: name}
	}
	for _, r := range c.Delete {
		ch := t.Chains[r.Chain]
		i := -1
		if ch != nil {
			i = slices.Index(ch.Rules, r.Spec)
		}
		if i < 0 {
			return fmt.Errorf("-D %s %s: no such rule", r.Chain, r.Spec)
		}
		ch.Rules = slices.Delete(ch.Rules, i, i+1)
	}
	for _, r := range c.Append {
		ch := t.Chains[r.Chain]
		if ch == nil {
			return fmt.Errorf("-A %s: no chain %q", r.Spec, r.Chain)
		}
		ch.Rules = append(ch.Rules, r.Spec)
	}
	for _, r := range c.Insert {
		ch := t.Chains[r.Chain]
		if ch == nil || r.Pos < 1 || r.Pos > len(ch.Rules)+1 {
			return fmt.Errorf("-I %s %d %s: no chain or bad position", r.Chain, r.Pos, r.Spec)
		}
		ch.Rules = slices.Insert(ch.Rules, r.Pos-1, r.Spec)
	}
	for _, name := range c.DeleteChains {
		if ch := t.Chains[name]; ch == nil || len(ch.Rules) > 0 {
			return fmt.Errorf("-X %s: missing or not empty", name)
		}
		delete(t.Chains, name)
		t.Order = slices.DeleteFunc(t.Order, func(n string) bool { return n == name })
	}
	return checkRefs(t)
}

// checkRefs fails when a rule jumps to a chain that does not exist.
func checkRefs(t *Table) error {
	for _, name := range t.Order {
		for _, r := range t.Chains[name].Rules {
			if target := jumpTarget(r); target != "" && !standardTargets[target] && t.Chains[target] == nil {
				return fmt.Errorf("chain %s: rule %q jumps to missing chain %q", name, r, target)
			}
		}
	}
	return nil
}
