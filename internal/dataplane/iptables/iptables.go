// Package iptables is svcproxy's iptables dataplane: it renders the plan
// into the chain layout of kube-proxy's iptables mode (KUBE-SERVICES,
// KUBE-NODEPORTS, KUBE-SVC-*, KUBE-SVL-*, KUBE-EXT-*, KUBE-FW-*, KUBE-SEP-*,
// KUBE-MARK-MASQ, KUBE-POSTROUTING, and filter chains for reject and drop),
// applied with iptables-restore --noflush. Partial syncs write only the
// chains of changed service ports and the dispatch chains.
package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/internal/plan"
)

// Runner runs one of the iptables binaries with stdin and returns its
// standard output.
type Runner func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)

// Options configure the dataplane.
type Options struct {
	// MasqueradeBit is the packet-mark bit that asks for masquerading
	// (default 14, mark 0x4000).
	MasqueradeBit uint
	// Families to program (default IPv4 and IPv6).
	Families []plan.Family
	// Backend is "nft" (iptables-nft), "legacy" (iptables-legacy) or ""
	// to detect which one the node uses.
	Backend string
	// Run runs the binaries; default os/exec. Tests pass a fake kernel.
	Run Runner
}

// Dataplane programs iptables. Not safe for concurrent use.
type Dataplane struct {
	opts    Options
	backend string
	state   map[plan.Family]*famState
}

// famState is what the last successful sync wrote in one family.
type famState struct {
	ports    map[plan.Key]*portRules
	needFull bool
}

// New returns a dataplane; it runs nothing until Sync or Cleanup.
func New(opts Options) *Dataplane {
	if opts.MasqueradeBit == 0 {
		opts.MasqueradeBit = 14
	}
	if len(opts.Families) == 0 {
		opts.Families = plan.Families
	}
	if opts.Run == nil {
		opts.Run = execRun
	}
	d := &Dataplane{opts: opts, backend: opts.Backend, state: map[plan.Family]*famState{}}
	for _, f := range opts.Families {
		d.state[f] = &famState{needFull: true}
	}
	return d
}

func execRun(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func binary(f plan.Family, backend, tool string) string {
	base := "iptables"
	if f == plan.IPv6 {
		base = "ip6tables"
	}
	return base + "-" + backend + tool
}

// detect picks the backend: the one already holding our chains, else what
// `iptables --version` says.
func (d *Dataplane) detect(ctx context.Context) string {
	if d.backend != "" {
		return d.backend
	}
	for _, b := range []string{"nft", "legacy"} {
		out, err := d.opts.Run(ctx, nil, binary(plan.IPv4, b, "-save"))
		if err == nil && bytes.Contains(out, []byte(":"+chainServices+" ")) {
			d.backend = b
			return b
		}
	}
	d.backend = "nft"
	if out, err := d.opts.Run(ctx, nil, "iptables", "--version"); err == nil && bytes.Contains(out, []byte("legacy")) {
		d.backend = "legacy"
	}
	return d.backend
}

// Sync makes every family's tables match the plan.
func (d *Dataplane) Sync(ctx context.Context, p *plan.Plan, ch plan.Changes) error {
	backend := d.detect(ctx)
	var errs []error
	for _, f := range d.opts.Families {
		st := d.state[f]
		err := d.syncFamily(ctx, p, ch, f, st, backend)
		if err != nil {
			st.needFull, st.ports = true, nil
			errs = append(errs, fmt.Errorf("iptables %s sync: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Dataplane) mark() string { return fmt.Sprintf("0x%x", uint32(1)<<d.opts.MasqueradeBit) }

func (d *Dataplane) syncFamily(ctx context.Context, p *plan.Plan, ch plan.Changes, f plan.Family, st *famState, backend string) error {
	r, err := newRenderer(p, f)
	if err != nil {
		return err
	}
	full := ch.Full || st.needFull
	var existing map[string]*Table
	if full {
		out, err := d.opts.Run(ctx, nil, binary(f, backend, "-save"))
		if err != nil {
			return err
		}
		existing = ParseSave(string(out))
	}
	ports := map[plan.Key]*portRules{}
	var stale []string
	var write []*Chain
	for _, sp := range p.PortsOf(f) {
		old := st.ports[sp.Key]
		if !full && old != nil && !ch.Keys[sp.Key] {
			ports[sp.Key] = old
			continue
		}
		pr := r.port(sp)
		ports[sp.Key] = pr
		write = append(write, pr.chains...)
	}
	if !full {
		for k := range ch.Keys {
			if old := st.ports[k]; old != nil {
				for _, c := range old.chains {
					if !hasChain(ports[k], c.Name) {
						stale = append(stale, c.Name)
					}
				}
			}
		}
	} else {
		want := map[string]bool{}
		for _, c := range write {
			want[c.Name] = true
		}
		if t := existing["nat"]; t != nil {
			for _, name := range t.Order {
				if owned(name) && !fixedChains[name] && !want[name] {
					stale = append(stale, name)
				}
			}
		}
	}
	in := d.restoreInput(p, r, ports, write, stale, full, existing)
	if _, err := d.opts.Run(ctx, in, binary(f, backend, "-restore"), "--noflush", "-w", "5"); err != nil {
		return err
	}
	st.ports, st.needFull = ports, false
	return nil
}

func hasChain(pr *portRules, name string) bool {
	return pr != nil && slices.ContainsFunc(pr.chains, func(c *Chain) bool { return c.Name == name })
}

// restoreInput writes the iptables-restore input of one sync: the dispatch
// chains always, fixed chains and jumps on full syncs, the given port
// chains, and deletions of stale ones.
func (d *Dataplane) restoreInput(p *plan.Plan, r *renderer, ports map[plan.Key]*portRules, write []*Chain, stale []string, full bool, existing map[string]*Table) []byte {
	keys := make([]plan.Key, 0, len(ports))
	for k := range ports {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b plan.Key) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	tails := r.tails(p, d.mark())
	var b bytes.Buffer
	for _, table := range []string{"filter", "nat"} {
		fmt.Fprintf(&b, "*%s\n", table)
		var rules bytes.Buffer
		declare := func(chain string, rs []string) {
			fmt.Fprintf(&b, ":%s - [0:0]\n", chain)
			for _, rule := range rs {
				fmt.Fprintf(&rules, "-A %s %s\n", chain, rule)
			}
		}
		for _, dc := range dispatchChains {
			if dc.table != table {
				continue
			}
			var rs []string
			for _, k := range keys {
				rs = append(rs, ports[k].dispatch[dc]...)
			}
			declare(dc.chain, append(rs, tails[dc]...))
		}
		if full {
			fixed := fixedChainRules(d.mark())
			for _, dc := range slices.SortedFunc(maps.Keys(fixed), func(a, b dispatch) int { return strings.Compare(a.chain, b.chain) }) {
				if dc.table == table {
					declare(dc.chain, fixed[dc])
				}
			}
		}
		if table == "nat" {
			for _, c := range write {
				declare(c.Name, c.Rules)
			}
			for _, name := range stale {
				fmt.Fprintf(&b, ":%s - [0:0]\n", name)
			}
		}
		b.Write(rules.Bytes())
		if full {
			writeJumps(&b, table, existing[table])
		}
		if table == "nat" {
			for _, name := range stale {
				fmt.Fprintf(&b, "-X %s\n", name)
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}

// writeJumps removes the jumps into our chains that a built-in chain holds
// and inserts ours at its top, in order.
func writeJumps(b *bytes.Buffer, table string, t *Table) {
	if t != nil {
		for _, name := range t.Order {
			if owned(name) {
				continue
			}
			for _, rule := range t.Chains[name].Rules {
				if owned(jumpTarget(rule)) {
					fmt.Fprintf(b, "-D %s %s\n", name, rule)
				}
			}
		}
	}
	pos := map[string]int{}
	for _, j := range jumps {
		if j.table == table {
			pos[j.chain]++
			fmt.Fprintf(b, "-I %s %d %s\n", j.chain, pos[j.chain], j.rule)
		}
	}
}

func jumpTarget(rule string) string {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" {
			return f[i+1]
		}
	}
	return ""
}

// Cleanup removes every chain and jump of ours, in both families and,
// when the backend is detected, in both backends. Nothing there is no
// error.
func (d *Dataplane) Cleanup(ctx context.Context) error {
	backends := []string{d.opts.Backend}
	if d.opts.Backend == "" {
		backends = []string{"nft", "legacy"}
	}
	var errs []error
	for _, f := range d.opts.Families {
		for _, b := range backends {
			if err := d.cleanup(ctx, f, b); err != nil {
				errs = append(errs, fmt.Errorf("iptables %s cleanup (%s): %w", f, b, err))
			}
		}
		d.state[f] = &famState{needFull: true}
	}
	return errors.Join(errs...)
}

func (d *Dataplane) cleanup(ctx context.Context, f plan.Family, backend string) error {
	out, err := d.opts.Run(ctx, nil, binary(f, backend, "-save"))
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil
		}
		return err
	}
	tables := ParseSave(string(out))
	var b bytes.Buffer
	for _, name := range []string{"filter", "nat"} {
		t := tables[name]
		if t == nil {
			continue
		}
		var ours []string
		for _, c := range t.Order {
			if owned(c) {
				ours = append(ours, c)
			}
		}
		var dels bytes.Buffer
		for _, c := range t.Order {
			if owned(c) {
				continue
			}
			for _, rule := range t.Chains[c].Rules {
				if owned(jumpTarget(rule)) {
					fmt.Fprintf(&dels, "-D %s %s\n", c, rule)
				}
			}
		}
		if len(ours) == 0 && dels.Len() == 0 {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", name)
		for _, c := range ours {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		b.Write(dels.Bytes())
		for _, c := range ours {
			fmt.Fprintf(&b, "-X %s\n", c)
		}
		b.WriteString("COMMIT\n")
	}
	if b.Len() == 0 {
		return nil
	}
	_, err = d.opts.Run(ctx, b.Bytes(), binary(f, backend, "-restore"), "--noflush", "-w", "5")
	return err
}
