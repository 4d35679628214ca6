package nftables

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// RulesetFromListing reads a table as `nft list table <family> <name>`
// prints it, so that the tracer can walk what the kernel really holds, not
// what svcproxy meant to write. It fails on lines it does not understand
// rather than guess.
func RulesetFromListing(listing string) (*Ruleset, error) {
	rs := &Ruleset{Chains: map[string]*RuleChain{}, Sets: map[string]map[string]bool{}, Maps: map[string]map[string]string{}, Timeouts: map[string]int32{}}
	p := listingParser{rs: rs}
	for i, line := range strings.Split(listing, "\n") {
		if err := p.line(strings.TrimSpace(line)); err != nil {
			return nil, fmt.Errorf("nft listing line %d %q: %w", i+1, line, err)
		}
	}
	if p.kind != "" {
		return nil, fmt.Errorf("nft listing: %s %s is not closed", p.kind, p.name)
	}
	return rs, nil
}

// listingParser tracks the block being read.
type listingParser struct {
	rs         *Ruleset
	kind, name string // "chain", "set" or "map", and its name; "" outside
	elements   string // the text of an elements list still open
	inElements bool
}

var (
	reListBlock   = regexp.MustCompile(`^(chain|set|map) (\S+) \{$`)
	reListHook    = regexp.MustCompile(`^type \w+ hook (\w+) priority ([^;]+); policy \w+;$`)
	reListTimeout = regexp.MustCompile(`^timeout (\S+)$`)
	reElemComment = regexp.MustCompile(` comment "[^"]*"`)
	reElemExpires = regexp.MustCompile(` (timeout|expires) \S+`)
)

func (p *listingParser) line(l string) error {
	switch {
	case l == "":
		return nil
	case p.inElements:
		return p.moreElements(l)
	case strings.HasPrefix(l, "table "), l == "}" && p.kind == "":
		return nil
	case l == "}":
		p.kind, p.name = "", ""
		return nil
	case p.kind == "":
		return p.open(l)
	case strings.HasPrefix(l, "elements = {"):
		p.inElements, p.elements = true, ""
		return p.moreElements(strings.TrimPrefix(l, "elements = {"))
	case p.kind == "chain":
		return p.chainLine(l)
	}
	return p.setLine(l)
}

// open starts a block, or skips the table's own comment and flags.
func (p *listingParser) open(l string) error {
	if strings.HasPrefix(l, "comment ") || strings.HasPrefix(l, "flags ") {
		return nil
	}
	m := reListBlock.FindStringSubmatch(l)
	if m == nil {
		return fmt.Errorf("not a chain, set or map")
	}
	p.kind, p.name = m[1], m[2]
	switch p.kind {
	case "chain":
		p.rs.Chains[p.name] = &RuleChain{Name: p.name}
	case "set":
		p.rs.Sets[p.name] = map[string]bool{}
	default:
		p.rs.Maps[p.name] = map[string]string{}
	}
	return nil
}

// chainLine reads a base chain's header or a rule (without the comment nft
// prints after it, which the renderer does not write).
func (p *listingParser) chainLine(l string) error {
	c := p.rs.Chains[p.name]
	if m := reListHook.FindStringSubmatch(l); m != nil {
		c.Hook, c.Priority = m[1], priorityValue(m[2])
		return nil
	}
	if strings.HasPrefix(l, "comment ") {
		return nil
	}
	c.Rules = append(c.Rules, reElemComment.ReplaceAllString(l, ""))
	return nil
}

// setLine reads a set's or map's declarations; only the timeout matters.
func (p *listingParser) setLine(l string) error {
	if m := reListTimeout.FindStringSubmatch(l); m != nil {
		d, err := nftDuration(m[1])
		p.rs.Timeouts[p.name] = int32(d.Seconds())
		return err
	}
	for _, known := range []string{"type ", "typeof ", "flags ", "comment ", "size ", "policy ", "gc-interval "} {
		if strings.HasPrefix(l, known) {
			return nil
		}
	}
	return fmt.Errorf("unknown %s declaration", p.kind)
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
		if e = strings.TrimSpace(reElemExpires.ReplaceAllString(reElemComment.ReplaceAllString(e, ""), "")); e != "" {
			p.element(e)
		}
	}
	return nil
}

// element stores one "key" (set) or "key : value" (map) element.
func (p *listingParser) element(e string) {
	if p.kind == "set" {
		p.rs.Sets[p.name][e] = true
		return
	}
	k, v, _ := strings.Cut(e, " : ")
	p.rs.Maps[p.name][k] = v
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
