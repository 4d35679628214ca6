package iptables

import "strings"

// Table is one table of an iptables-save dump: its chains in the order the
// dump lists them.
type Table struct {
	Name   string
	Order  []string
	Chains map[string]*Chain
}

// ParseSave reads iptables-save output into its tables. Counters and
// comment lines are dropped.
func ParseSave(text string) map[string]*Table {
	tables := map[string]*Table{}
	var t *Table
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			t = &Table{Name: line[1:], Chains: map[string]*Chain{}}
			tables[t.Name] = t
		case t == nil:
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			t.Order = append(t.Order, name)
			t.Chains[name] = &Chain{Name: name}
		case strings.HasPrefix(line, "-A "):
			chain, rule, _ := strings.Cut(line[3:], " ")
			if c := t.Chains[chain]; c != nil {
				c.Rules = append(c.Rules, rule)
			}
		}
	}
	return tables
}

// Fields splits a rule as iptables-save prints it into its words, a quoted
// string (a comment) being one.
func Fields(rule string) ([]string, error) { return tokens(rule) }

// JumpTarget is the target of a rule's -j, or "".
func JumpTarget(rule string) string { return jumpTarget(rule) }

// DeleteJumps deletes, from every chain of table t that owned does not
// claim, each rule jumping to a chain it claims.
func DeleteJumps(tx *Transaction, table string, t *Table, owned func(chain string) bool) {
	if t == nil {
		return
	}
	for _, name := range t.Order {
		if owned(name) {
			continue
		}
		for _, rule := range t.Chains[name].Rules {
			if owned(jumpTarget(rule)) {
				tx.Delete(table, name, rule)
			}
		}
	}
}

// RemoveChains deletes, table by table in order, the chains owned claims
// and every jump into them.
func RemoveChains(tx *Transaction, tables map[string]*Table, order []string, owned func(chain string) bool) {
	for _, name := range order {
		t := tables[name]
		if t == nil {
			continue
		}
		DeleteJumps(tx, name, t, owned)
		for _, c := range t.Order {
			if owned(c) {
				tx.Declare(name, c)
				tx.DeleteChain(name, c)
			}
		}
	}
}
