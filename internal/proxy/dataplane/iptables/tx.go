package iptables

import (
	"bytes"
	"slices"
	"strconv"
)

// Transaction is one change to the tables of one family, as data: what one
// `iptables-restore --noflush` input says. For each table it declares
// chains (creating them, or emptying those that exist), then deletes rules
// (by specification), appends rules, inserts rules (at 1-based positions
// counted after the deletions, in ascending order), and deletes chains, in
// that order. Each table is applied atomically. The dataplane builds one,
// applies it in one place (Dataplane.apply), and the Fake applies the same
// value in memory.
type Transaction struct {
	tables []*TableChange
}

// TableChange is what a transaction does to one table.
type TableChange struct {
	Table        string
	Declare      []string // chains created or emptied
	Delete       []Rule   // rules deleted, by chain and specification
	Append       []Rule   // rules appended
	Insert       []Rule   // rules inserted at Pos
	DeleteChains []string // chains deleted (empty and unreferenced by then)
}

// Rule is a rule of a chain: its arguments after "-A <chain>", and for an
// insertion its position.
type Rule struct {
	Chain string
	Spec  string
	Pos   int // Insert only, 1-based
}

// tableOrder is the order in which a transaction writes its tables.
var tableOrder = []string{"filter", "nat"}

// table returns the change to a table, adding it.
func (tx *Transaction) table(name string) *TableChange {
	for _, t := range tx.tables {
		if t.Table == name {
			return t
		}
	}
	t := &TableChange{Table: name}
	tx.tables = append(tx.tables, t)
	slices.SortStableFunc(tx.tables, func(a, b *TableChange) int {
		return slices.Index(tableOrder, a.Table) - slices.Index(tableOrder, b.Table)
	})
	return t
}

// Declare creates a chain, or empties it if it exists.
func (tx *Transaction) Declare(table string, chains ...string) {
	if len(chains) == 0 {
		return
	}
	t := tx.table(table)
	t.Declare = append(t.Declare, chains...)
}

// Write declares a chain and appends its rules: the chain then holds
// exactly these.
func (tx *Transaction) Write(table string, c *Chain) {
	tx.Declare(table, c.Name)
	for _, r := range c.Rules {
		tx.Append(table, c.Name, r)
	}
}

// Append appends a rule to a chain.
func (tx *Transaction) Append(table, chain, spec string) {
	t := tx.table(table)
	t.Append = append(t.Append, Rule{Chain: chain, Spec: spec})
}

// Insert inserts a rule at position pos (1-based) of a chain.
func (tx *Transaction) Insert(table, chain string, pos int, spec string) {
	t := tx.table(table)
	t.Insert = append(t.Insert, Rule{Chain: chain, Spec: spec, Pos: pos})
}

// Delete deletes a rule of a chain by its specification.
func (tx *Transaction) Delete(table, chain, spec string) {
	t := tx.table(table)
	t.Delete = append(t.Delete, Rule{Chain: chain, Spec: spec})
}

// DeleteChain deletes a chain, which must be declared (so emptied) in the
// same transaction or be empty already.
func (tx *Transaction) DeleteChain(table, chain string) {
	t := tx.table(table)
	t.DeleteChains = append(t.DeleteChains, chain)
}

// Tables returns the changes, table by table, in the order they apply.
func (tx *Transaction) Tables() []*TableChange { return tx.tables }

// Empty reports whether the transaction changes nothing.
func (tx *Transaction) Empty() bool {
	for _, t := range tx.tables {
		if len(t.Declare)+len(t.Delete)+len(t.Append)+len(t.Insert)+len(t.DeleteChains) > 0 {
			return false
		}
	}
	return true
}

// Bytes is the transaction as iptables-restore input.
func (tx *Transaction) Bytes() []byte {
	var b bytes.Buffer
	for _, t := range tx.tables {
		b.WriteString("*" + t.Table + "\n")
		for _, c := range t.Declare {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		for _, r := range t.Delete {
			b.WriteString("-D " + r.Chain + " " + r.Spec + "\n")
		}
		for _, r := range t.Append {
			b.WriteString("-A " + r.Chain + " " + r.Spec + "\n")
		}
		for _, r := range t.Insert {
			b.WriteString("-I " + r.Chain + " " + strconv.Itoa(r.Pos) + " " + r.Spec + "\n")
		}
		for _, c := range t.DeleteChains {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}

func (tx *Transaction) String() string { return string(tx.Bytes()) }
