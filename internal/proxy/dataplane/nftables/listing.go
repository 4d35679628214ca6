package nftables

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Listing is what `nft list ruleset` or `nft list table` prints, read into
// tables and their objects. It is the one reader of nft's listings: the
// tracer's Ruleset (RulesetFromListing), the canonical dumps the kernel
// tests compare (Canonical), and the lab's excerpts of one Service's rules
// (ListedObject.Render) are built on it.
type Listing struct {
	Tables []*ListedTable
}

// ListedTable is one table: its own declarations and its objects.
type ListedTable struct {
	Head    string   // "table ip svcproxy"
	Lines   []string // its declarations (comment, flags), trimmed
	Objects []*ListedObject
}

// ListedObject is a chain, set, map or any other object of a table.
type ListedObject struct {
	Kind, Name string   // "chain", "nat-prerouting"
	Lines      []string // its declarations and rules, trimmed, in order
	Elements   []string // of a set or map, one each, as listed
}

var reListObject = regexp.MustCompile(`^(.+) (\S+) \{$`)

// ParseListing reads nft's listing. It fails on a line outside a table and
// on a block left open, naming the line.
func ParseListing(text string) (*Listing, error) {
	p := &listingParser{}
	for i, line := range strings.Split(text, "\n") {
		if err := p.line(strings.TrimSpace(line)); err != nil {
			return nil, fmt.Errorf("nft listing line %d %q: %w", i+1, line, err)
		}
	}
	if p.table != nil || p.obj != nil {
		return nil, fmt.Errorf("nft listing: a block is not closed")
	}
	return &p.out, nil
}

// listingParser tracks the block being read.
type listingParser struct {
	out        Listing
	table      *ListedTable
	obj        *ListedObject
	inElements bool
	elements   string // the text of an elements list still open
}

func (p *listingParser) line(l string) error {
	switch {
	case p.inElements:
		return p.moreElements(l)
	case l == "":
		return nil
	case p.table == nil:
		head, ok := strings.CutSuffix(l, " {")
		if !ok || !strings.HasPrefix(head, "table ") {
			return fmt.Errorf("outside a table")
		}
		p.table = &ListedTable{Head: head}
		p.out.Tables = append(p.out.Tables, p.table)
	case l == "}" && p.obj != nil:
		p.obj = nil
	case l == "}":
		p.table = nil
	case p.obj == nil:
		if m := reListObject.FindStringSubmatch(l); m != nil {
			p.obj = &ListedObject{Kind: m[1], Name: m[2]}
			p.table.Objects = append(p.table.Objects, p.obj)
			return nil
		}
		p.table.Lines = append(p.table.Lines, l)
	case strings.HasPrefix(l, "elements = {"):
		p.inElements, p.elements = true, ""
		return p.moreElements(strings.TrimPrefix(l, "elements = {"))
	default:
		p.obj.Lines = append(p.obj.Lines, l)
	}
	return nil
}

// moreElements collects an elements list until its closing brace.
func (p *listingParser) moreElements(l string) error {
	closed := strings.HasSuffix(l, "}")
	p.elements += " " + strings.TrimSuffix(l, "}")
	if !closed {
		return nil
	}
	p.inElements = false
	for _, e := range strings.Split(p.elements, ",") {
		if e = strings.TrimSpace(e); e != "" {
			p.obj.Elements = append(p.obj.Elements, e)
		}
	}
	return nil
}

// Render prints an object as nft lists it, with the given elements.
func (o *ListedObject) Render(elements []string) []string {
	out := []string{"\t" + o.Kind + " " + o.Name + " {"}
	for _, l := range o.Lines {
		out = append(out, "\t\t"+l)
	}
	if len(elements) > 0 {
		out = append(out, "\t\telements = { "+strings.Join(elements, ",\n\t\t\t     ")+" }")
	}
	return append(out, "\t}")
}

// Canonical prints the listing in an order that depends only on what the
// tables hold, not on the order it was created in: the kernel lists
// tables and their objects in creation order, and set elements in its own
// hash order, none of which means anything. Tables are sorted, each
// table's objects sorted, elements put one per line and sorted. Rules
// keep their order, which does mean something.
func (l *Listing) Canonical() string {
	var tables []string
	for _, t := range l.Tables {
		lines := []string{t.Head + " {"}
		for _, d := range t.Lines {
			lines = append(lines, "\t"+d)
		}
		var objects []string
		for _, o := range t.Objects {
			objects = append(objects, strings.Join(o.canonical(), "\n"))
		}
		slices.Sort(objects)
		tables = append(tables, strings.Join(append(lines, objects...), "\n")+"\n}")
	}
	slices.Sort(tables)
	return strings.Join(tables, "\n")
}

func (o *ListedObject) canonical() []string {
	out := o.Render(nil)
	if len(o.Elements) == 0 {
		return out
	}
	elems := slices.Sorted(slices.Values(o.Elements))
	out = append(out[:len(out)-1], "\t\telements = {")
	for _, e := range elems {
		out = append(out, "\t\t\t"+e)
	}
	return append(out, "\t\t}", "\t}")
}

// CanonicalListing reads nft's listing and prints it canonically (see
// Listing.Canonical).
func CanonicalListing(text string) (string, error) {
	l, err := ParseListing(text)
	if err != nil {
		return "", err
	}
	return l.Canonical(), nil
}

var (
	reListHook    = regexp.MustCompile(`^type \w+ hook (\w+) priority ([^;]+); policy \w+;$`)
	reListTimeout = regexp.MustCompile(`^timeout (\S+)$`)
	reElemComment = regexp.MustCompile(` comment "[^"]*"`)
	reElemExpires = regexp.MustCompile(` (timeout|expires) \S+`)
)

// RulesetFromListing reads a table as `nft list table <family> <name>`
// prints it, so that the tracer can walk what the kernel really holds, not
// what svcproxy meant to write. It fails on what it does not understand
// rather than guess.
func RulesetFromListing(text string) (*Ruleset, error) {
	l, err := ParseListing(text)
	if err != nil {
		return nil, err
	}
	rs := &Ruleset{Chains: map[string]*RuleChain{}, Sets: map[string]map[string]bool{}, Maps: map[string]map[string]string{}, Timeouts: map[string]int32{}}
	for _, t := range l.Tables {
		for _, d := range t.Lines {
			if !strings.HasPrefix(d, "comment ") && !strings.HasPrefix(d, "flags ") {
				return nil, fmt.Errorf("nft listing: %s: unknown declaration %q", t.Head, d)
			}
		}
		for _, o := range t.Objects {
			if err := rs.add(o); err != nil {
				return nil, fmt.Errorf("nft listing: %s %s: %w", o.Kind, o.Name, err)
			}
		}
	}
	return rs, nil
}

// add reads one object into the ruleset.
func (rs *Ruleset) add(o *ListedObject) error {
	switch o.Kind {
	case "chain":
		return rs.addChain(o)
	case "set":
		rs.Sets[o.Name] = map[string]bool{}
	case "map":
		rs.Maps[o.Name] = map[string]string{}
	default:
		return fmt.Errorf("not a chain, set or map")
	}
	if err := rs.setDeclarations(o); err != nil {
		return err
	}
	for _, e := range o.Elements {
		e = strings.TrimSpace(reElemExpires.ReplaceAllString(reElemComment.ReplaceAllString(e, ""), ""))
		if o.Kind == "set" {
			rs.Sets[o.Name][e] = true
			continue
		}
		k, v, _ := strings.Cut(e, " : ")
		rs.Maps[o.Name][k] = v
	}
	return nil
}

// addChain reads a base chain's header and the rules (without the comment
// nft prints after a rule, which the renderer does not write).
func (rs *Ruleset) addChain(o *ListedObject) error {
	c := &RuleChain{Name: o.Name}
	for _, l := range o.Lines {
		switch m := reListHook.FindStringSubmatch(l); {
		case m != nil:
			c.Hook, c.Priority = m[1], priorityValue(m[2])
		case strings.HasPrefix(l, "comment "):
		default:
			c.Rules = append(c.Rules, reElemComment.ReplaceAllString(l, ""))
		}
	}
	rs.Chains[o.Name] = c
	return nil
}

// setDeclarations reads a set's or map's declarations; only the timeout
// matters.
func (rs *Ruleset) setDeclarations(o *ListedObject) error {
	for _, l := range o.Lines {
		if m := reListTimeout.FindStringSubmatch(l); m != nil {
			d, err := nftDuration(m[1])
			if err != nil {
				return err
			}
			rs.Timeouts[o.Name] = int32(d.Seconds())
			continue
		}
		known := false
		for _, k := range []string{"type ", "typeof ", "flags ", "comment ", "size ", "policy ", "gc-interval "} {
			known = known || strings.HasPrefix(l, k)
		}
		if !known {
			return fmt.Errorf("unknown declaration %q", l)
		}
	}
	return nil
}

// nftDuration parses a duration as nft prints it: "3h", "1d2h", "10800s".
func nftDuration(s string) (time.Duration, error) {
	var days int
	if d, rest, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil {
			return 0, fmt.Errorf("duration %q", s)
		}
		days, s = n, rest
	}
	var d time.Duration
	if s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("duration %q", s)
		}
	}
	return time.Duration(days)*24*time.Hour + d, nil
}
