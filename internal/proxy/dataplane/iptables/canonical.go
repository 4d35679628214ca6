package iptables

import (
	"maps"
	"slices"
	"strings"
)

// CanonicalSave reduces iptables-save output to what this dataplane owns,
// in an order that depends only on the contents: per table (sorted), our
// chains sorted by name with their rules in order, then the jumps into
// them from built-in chains. Counters and other chains are left out, so a
// node with nothing of ours gives "".
func CanonicalSave(text string) string {
	tables := ParseSave(text)
	var out []string
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		t := tables[name]
		var lines []string
		chains := slices.Clone(t.Order)
		slices.Sort(chains)
		for _, c := range chains {
			if !owned(c) {
				for _, r := range t.Chains[c].Rules {
					if owned(jumpTarget(r)) {
						lines = append(lines, "-A "+c+" "+r)
					}
				}
				continue
			}
			lines = append(lines, ":"+c)
			for _, r := range t.Chains[c].Rules {
				lines = append(lines, "-A "+c+" "+r)
			}
		}
		if len(lines) > 0 {
			out = append(out, "*"+name+"\n"+strings.Join(lines, "\n"))
		}
	}
	return strings.Join(out, "\n")
}
