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
