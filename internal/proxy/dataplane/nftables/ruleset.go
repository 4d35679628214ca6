package nftables

import (
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"
)

// Ruleset is a table as the tracer sees it: chains with their rules as text,
// and the contents of sets and maps.
type Ruleset struct {
	Chains map[string]*RuleChain
	// Sets holds each set's elements, keys joined with " . ".
	Sets map[string]map[string]bool
	// Maps holds each map's elements: key (joined with " . ") to value.
	Maps map[string]map[string]string
	// Timeouts holds the timeout of sets that have one (affinity sets).
	Timeouts map[string]int32
}

// RuleChain is one chain. Base chains have a hook and a priority.
type RuleChain struct {
	Name     string
	Hook     string // "" for a regular chain
	Priority int
	Rules    []string
}

// RulesetFromFake reads the table a knftables.Fake holds.
func RulesetFromFake(f *knftables.Fake) *Ruleset {
	f.RLock()
	defer f.RUnlock()
	rs := &Ruleset{Chains: map[string]*RuleChain{}, Sets: map[string]map[string]bool{}, Maps: map[string]map[string]string{}, Timeouts: map[string]int32{}}
	t := f.Table
	if t == nil {
		return rs
	}
	for name, c := range t.Chains {
		rc := &RuleChain{Name: name}
		if c.Hook != nil {
			rc.Hook = string(*c.Hook)
			rc.Priority = priorityValue(string(*c.Priority))
		}
		for _, r := range c.Rules {
			rc.Rules = append(rc.Rules, r.Rule)
		}
		rs.Chains[name] = rc
	}
	for name, s := range t.Sets {
		rs.Sets[name] = map[string]bool{}
		for _, e := range s.Elements {
			rs.Sets[name][strings.Join(e.Key, " . ")] = true
		}
		if s.Timeout != nil {
			rs.Timeouts[name] = int32(s.Timeout.Seconds())
		}
	}
	for name, m := range t.Maps {
		rs.Maps[name] = map[string]string{}
		for _, e := range m.Elements {
			rs.Maps[name][strings.Join(e.Key, " . ")] = strings.Join(e.Value, " . ")
		}
	}
	return rs
}

// priorityValue turns nft's named priorities (and "name +/- n") into numbers.
func priorityValue(p string) int {
	named := map[string]int{"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
	fields := strings.Fields(p)
	if len(fields) == 0 {
		return 0
	}
	base, ok := named[fields[0]]
	if !ok {
		n, _ := strconv.Atoi(fields[0])
		return n
	}
	if len(fields) == 3 {
		n, _ := strconv.Atoi(fields[2])
		if fields[1] == "-" {
			n = -n
		}
		base += n
	}
	return base
}
