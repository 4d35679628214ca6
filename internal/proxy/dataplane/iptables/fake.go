package iptables

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// builtins are the built-in chains of the tables this dataplane uses.
var builtins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

// targets that are not chains.
var standardTargets = map[string]bool{"ACCEPT": true, "DROP": true, "REJECT": true, "RETURN": true, "DNAT": true, "MASQUERADE": true, "MARK": true}

// Fake is an in-memory kernel for the iptables binaries of one backend
// ("nft"): Run answers iptables-save and applies iptables-restore input
// strictly (rules in missing chains, jumps to missing chains, deleting a
// missing rule or a chain still referenced or not empty are errors, and the
// table is left as it was). LastRestore keeps the last input per binary.
type Fake struct {
	mu          sync.Mutex
	tables      map[string]map[string]*Table // binary base ("iptables", "ip6tables") -> table
	LastRestore map[string]string
}

// NewFake returns an empty fake kernel.
func NewFake() *Fake {
	return &Fake{tables: map[string]map[string]*Table{}, LastRestore: map[string]string{}}
}

// Run is a Runner.
func (f *Fake) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "iptables" && slices.Contains(args, "--version") {
		return []byte("iptables v1.8.9 (nf_tables)\n"), nil
	}
	base, tool, ok := strings.Cut(name, "-nft-")
	if !ok {
		if strings.Contains(name, "-legacy-") {
			return nil, nil // no legacy tables
		}
		return nil, fmt.Errorf("fake: unknown binary %q", name)
	}
	switch tool {
	case "save":
		return []byte(f.save(base)), nil
	case "restore":
		f.LastRestore[base] = string(stdin)
		return nil, f.restore(base, string(stdin))
	}
	return nil, fmt.Errorf("fake: unknown binary %q", name)
}

// Save returns what iptables-save (base "iptables" or "ip6tables") prints.
func (f *Fake) Save(base string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.save(base)
}

func (f *Fake) save(base string) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(f.tables[base])) {
		t := f.tables[base][name]
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

func (f *Fake) restore(base, input string) error {
	if f.tables[base] == nil {
		f.tables[base] = map[string]*Table{}
	}
	var t *Table
	for n, line := range strings.Split(input, "\n") {
		var err error
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			t = cloneTable(f.tables[base][line[1:]], line[1:])
		case t == nil:
			err = fmt.Errorf("outside a table")
		case line == "COMMIT":
			if err = checkRefs(t); err == nil {
				f.tables[base][t.Name] = t
				t = nil
			}
		default:
			err = apply(t, line)
		}
		if err != nil {
			return fmt.Errorf("fake %s-restore: line %d %q: %w", base, n+1, line, err)
		}
	}
	return nil
}

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

func apply(t *Table, line string) error {
	if strings.HasPrefix(line, ":") {
		name, _, _ := strings.Cut(line[1:], " ")
		if c := t.Chains[name]; c != nil {
			c.Rules = nil
			return nil
		}
		t.Order = append(t.Order, name)
		t.Chains[name] = &Chain{Name: name}
		return nil
	}
	f := strings.SplitN(line, " ", 3)
	if len(f) < 2 {
		return fmt.Errorf("short command")
	}
	c := t.Chains[f[1]]
	if c == nil {
		return fmt.Errorf("no chain %q", f[1])
	}
	rule := ""
	if len(f) == 3 {
		rule = f[2]
	}
	switch f[0] {
	case "-A":
		c.Rules = append(c.Rules, rule)
	case "-I":
		pos, rest, _ := strings.Cut(rule, " ")
		i, err := strconv.Atoi(pos)
		if err != nil || i < 1 || i > len(c.Rules)+1 {
			return fmt.Errorf("bad position %q", pos)
		}
		c.Rules = slices.Insert(c.Rules, i-1, rest)
	case "-D":
		i := slices.Index(c.Rules, rule)
		if i < 0 {
			return fmt.Errorf("no such rule")
		}
		c.Rules = slices.Delete(c.Rules, i, i+1)
	case "-X":
		if len(c.Rules) > 0 {
			return fmt.Errorf("chain %s not empty", c.Name)
		}
		delete(t.Chains, c.Name)
		t.Order = slices.DeleteFunc(t.Order, func(n string) bool { return n == c.Name })
	default:
		return fmt.Errorf("unknown command %q", f[0])
	}
	return nil
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
