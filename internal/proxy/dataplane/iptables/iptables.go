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
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/go-logr/logr"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
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
	// Log receives, at -v=9, every iptables-restore input, as kube-proxy
	// logs them; the zero Logger discards.
	Log logr.Logger
}

// Dataplane programs iptables. Not safe for concurrent use.
type Dataplane struct {
	opts    Options
	backend string
	state   map[plan.Family]*famState
}

// famState is what the last successful sync wrote in one family: every
// service port's chains and dispatch rules, and the dispatch chains' order
// (blocks of rules by sorted key, then the tails), so a partial sync can
// edit single rules of the dispatch chains by position.
type famState struct {
	ports    map[plan.Key]*portRules
	keys     []plan.Key         // of ports, sorted
	npTail   []string           // end of nat KUBE-SERVICES and filter KUBE-EXTERNAL-SERVICES
	cips     []netip.Addr       // sorted distinct ClusterIPs: the rejects ending filter KUBE-SERVICES
	cipRefs  map[netip.Addr]int // service ports per ClusterIP
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
			*st = famState{needFull: true}
			errs = append(errs, fmt.Errorf("iptables %s sync: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Dataplane) mark() string { return fmt.Sprintf("0x%x", uint32(1)<<d.opts.MasqueradeBit) }

func (d *Dataplane) syncFamily(ctx context.Context, p *plan.Plan, ch plan.Changes, f plan.Family, st *famState, backend string) error {
	if err := p.Config.Check(Capabilities); err != nil {
		return err
	}
	r := &renderer{fam: f}
	if !ch.Full && !st.needFull && slices.Equal(r.nodePortTail(p.NodePorts(f)), st.npTail) {
		return d.partialSync(ctx, p, ch, f, st, r, backend)
	}
	return d.fullSync(ctx, p, f, st, r, backend)
}

// tail is what ends dispatch chain i after the service ports' rules.
func (st *famState) tail(i int) []string {
	switch i {
	case dNatServices, dFilterExternal:
		return st.npTail
	case dFilterServices:
		out := make([]string, len(st.cips))
		for j, ip := range st.cips {
			out[j] = rejectRule(ip)
		}
		return out
	}
	return nil
}

// chunkChains is how many port chains one iptables-nft-restore transaction
// of a full sync writes at most (whole service ports, so a chunk may hold a
// few more). iptables-nft-restore's time grows much faster than linearly
// with the size of a transaction (bench at 1000 Services × 10 endpoints:
// 9.9 s in one transaction, 1.4 s in chunks of 100 Services).
const chunkChains = 1000

// fullSync reads the tables, declares (so flushes) and rewrites every chain
// of ours, re-installs the jumps from the built-in chains and deletes the
// chains of ours the plan no longer needs.
func (d *Dataplane) fullSync(ctx context.Context, p *plan.Plan, f plan.Family, st *famState, r *renderer, backend string) error {
	out, err := d.opts.Run(ctx, nil, binary(f, backend, "-save"))
	if err != nil {
		return err
	}
	existing := ParseSave(string(out))
	sps := p.PortsOf(f)
	ns := &famState{ports: make(map[plan.Key]*portRules, len(sps)), keys: make([]plan.Key, 0, len(sps)),
		cipRefs: map[netip.Addr]int{}, npTail: r.nodePortTail(p.NodePorts(f))}
	want := map[string]bool{}
	nChains := 0
	for _, sp := range sps {
		pr := r.port(sp)
		ns.ports[sp.Key] = pr
		ns.keys = append(ns.keys, sp.Key)
		if ns.cipRefs[sp.ClusterIP]++; ns.cipRefs[sp.ClusterIP] == 1 {
			ns.cips = append(ns.cips, sp.ClusterIP)
		}
		for _, c := range pr.chains {
			want[c.Name] = true
		}
		nChains += len(pr.chains)
	}
	slices.SortFunc(ns.cips, netip.Addr.Compare)
	var stale []string
	if t := existing["nat"]; t != nil {
		for _, name := range t.Order {
			if owned(name) && !fixedChains[name] && !want[name] {
				stale = append(stale, name)
			}
		}
	}
	chunked := backend == "nft" && nChains > chunkChains
	if chunked {
		// KUBE-MARK-MASQ first, as the port chains jump to it; then the
		// port chains, a chunk at a time; the dispatch chains last.
		var b bytes.Buffer
		b.WriteString("*nat\n")
		fixed := fixedChainRules(d.mark())
		writeChains(&b, []*Chain{{Name: chainMarkMasq, Rules: fixed[dispatch{"nat", chainMarkMasq}]}})
		b.WriteString("COMMIT\n")
		if _, err := d.restore(ctx, f, backend, b.Bytes()); err != nil {
			return err
		}
		var chunk []*Chain
		flush := func() error {
			if len(chunk) == 0 {
				return nil
			}
			b.Reset()
			b.WriteString("*nat\n")
			writeChains(&b, chunk)
			b.WriteString("COMMIT\n")
			chunk = chunk[:0]
			_, err := d.restore(ctx, f, backend, b.Bytes())
			return err
		}
		for _, k := range ns.keys {
			chunk = append(chunk, ns.ports[k].chains...)
			if len(chunk) >= chunkChains {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
	var b bytes.Buffer
	for _, table := range []string{"filter", "nat"} {
		b.WriteString("*" + table + "\n")
		var rules bytes.Buffer
		declare := func(chain string, rs []string) {
			b.WriteString(":" + chain + " - [0:0]\n")
			for _, rule := range rs {
				rules.WriteString("-A " + chain + " " + rule + "\n")
			}
		}
		for i, dc := range dispatchChains {
			if dc.table != table {
				continue
			}
			var rs []string
			for _, k := range ns.keys {
				rs = append(rs, ns.ports[k].dispatch[i]...)
			}
			declare(dc.chain, append(rs, ns.tail(i)...))
		}
		fixed := fixedChainRules(d.mark())
		for _, dc := range slices.SortedFunc(maps.Keys(fixed), func(a, b dispatch) int { return strings.Compare(a.chain, b.chain) }) {
			if dc.table == table {
				declare(dc.chain, fixed[dc])
			}
		}
		localnet := table == "filter" && p.NodePorts(f).Loopback
		if localnet {
			declare(chainLocalnetFirewall, []string{localnetFirewall})
		}
		if table == "nat" {
			if !chunked {
				var all []*Chain
				for _, k := range ns.keys {
					all = append(all, ns.ports[k].chains...)
				}
				writeChains(&b, all)
			}
			for _, name := range stale {
				b.WriteString(":" + name + " - [0:0]\n")
			}
		}
		b.Write(rules.Bytes())
		writeJumps(&b, table, existing[table])
		if localnet {
			ensureLocalnetJumps(&b, existing[table])
		}
		if table == "nat" {
			for _, name := range stale {
				b.WriteString("-X " + name + "\n")
			}
		}
		b.WriteString("COMMIT\n")
	}
	if _, err := d.restore(ctx, f, backend, b.Bytes()); err != nil {
		return err
	}
	*st = *ns
	return nil
}

func (d *Dataplane) restore(ctx context.Context, f plan.Family, backend string, in []byte) ([]byte, error) {
	if v := d.opts.Log.V(9); v.Enabled() {
		v.Info("Running iptables-restore", "ipFamily", f, "backend", backend, "input", string(in))
	}
	return d.opts.Run(ctx, in, binary(f, backend, "-restore"), "--noflush", "-w", "5")
}

// writeChains declares chains (flushing the ones that exist) and appends
// their rules. The declarations go in descending name order: both
// iptables-restore binaries keep user chains sorted by name and load
// large inputs markedly faster in that order (iptables-nft-restore: 3.9 s
// instead of 9.9 s at 1000 Services × 10 endpoints).
func writeChains(b *bytes.Buffer, chains []*Chain) {
	sorted := slices.Clone(chains)
	slices.SortFunc(sorted, func(x, y *Chain) int { return strings.Compare(y.Name, x.Name) })
	for _, c := range sorted {
		b.WriteString(":" + c.Name + " - [0:0]\n")
	}
	for _, c := range sorted {
		for _, rule := range c.Rules {
			b.WriteString("-A " + c.Name + " " + rule + "\n")
		}
	}
}

func compareKeys(a, b plan.Key) int {
	if a.Less(b) {
		return -1
	}
	if b.Less(a) {
		return 1
	}
	return 0
}

// tableEdit is the restore input of a partial sync for one table, in the
// order it is written.
type tableEdit struct {
	decl, dels, rules, ins, drop bytes.Buffer
}

// partialSync writes only what the changed service ports changed: their
// chains whose rules differ (declared, so flushed, and rewritten), their
// rules in the dispatch chains (deleted by specification and inserted at
// their position, the order a full sync writes), the ClusterIP rejects that
// appear or go, and the deletion of their chains no longer needed. It reads
// nothing from the kernel.
func (d *Dataplane) partialSync(ctx context.Context, p *plan.Plan, ch plan.Changes, f plan.Family, st *famState, r *renderer, backend string) error {
	var changed []plan.Key
	for k := range ch.Keys {
		if k.Family == f {
			changed = append(changed, k)
		}
	}
	slices.SortFunc(changed, compareKeys)
	edits := map[string]*tableEdit{"filter": {}, "nat": {}}
	nat := edits["nat"]
	newPR := make(map[plan.Key]*portRules, len(changed))
	var inserted [nDispatch]map[plan.Key]bool
	touched := map[netip.Addr]bool{}
	for _, k := range changed {
		old := st.ports[k]
		var nw *portRules
		if sp := p.Ports[k]; sp != nil {
			nw = r.port(sp)
		}
		newPR[k] = nw
		// Chains.
		oldChains := map[string]*Chain{}
		if old != nil {
			for _, c := range old.chains {
				oldChains[c.Name] = c
			}
		}
		var write []*Chain
		if nw != nil {
			for _, c := range nw.chains {
				oc := oldChains[c.Name]
				delete(oldChains, c.Name)
				if oc == nil || !slices.Equal(oc.Rules, c.Rules) {
					write = append(write, c)
				}
			}
		}
		for _, c := range write {
			nat.decl.WriteString(":" + c.Name + " - [0:0]\n")
			for _, rule := range c.Rules {
				nat.rules.WriteString("-A " + c.Name + " " + rule + "\n")
			}
		}
		for _, name := range slices.Sorted(maps.Keys(oldChains)) {
			nat.decl.WriteString(":" + name + " - [0:0]\n")
			nat.drop.WriteString("-X " + name + "\n")
		}
		// Dispatch rules.
		for i, dc := range dispatchChains {
			var o, n []string
			if old != nil {
				o = old.dispatch[i]
			}
			if nw != nil {
				n = nw.dispatch[i]
			}
			if slices.Equal(o, n) {
				continue
			}
			for _, rule := range o {
				edits[dc.table].dels.WriteString("-D " + dc.chain + " " + rule + "\n")
			}
			if len(n) > 0 {
				if inserted[i] == nil {
					inserted[i] = map[plan.Key]bool{}
				}
				inserted[i][k] = true
			}
		}
		// ClusterIP references.
		if old != nil {
			st.cipRefs[old.clusterIP]--
			touched[old.clusterIP] = true
		}
		if nw != nil {
			st.cipRefs[nw.clusterIP]++
			touched[nw.clusterIP] = true
		}
	}
	// The rejects of ClusterIPs that went; those that came are inserted
	// below, once the positions are known.
	var addIPs []netip.Addr
	for _, ip := range slices.SortedFunc(maps.Keys(touched), netip.Addr.Compare) {
		i, present := slices.BinarySearchFunc(st.cips, ip, netip.Addr.Compare)
		switch now := st.cipRefs[ip] > 0; {
		case present && !now:
			edits["filter"].dels.WriteString("-D " + chainServices + " " + rejectRule(ip) + "\n")
			st.cips = slices.Delete(st.cips, i, i+1)
		case !present && now:
			addIPs = append(addIPs, ip)
			st.cips = slices.Insert(st.cips, i, ip)
		}
		if st.cipRefs[ip] <= 0 {
			delete(st.cipRefs, ip)
		}
	}
	// The new state, then the insertions at their final positions, in
	// ascending order, after all deletions.
	for _, k := range changed {
		old, nw := st.ports[k], newPR[k]
		i, found := slices.BinarySearchFunc(st.keys, k, compareKeys)
		switch {
		case nw == nil && old != nil:
			delete(st.ports, k)
			if found {
				st.keys = slices.Delete(st.keys, i, i+1)
			}
		case nw != nil:
			st.ports[k] = nw
			if !found {
				st.keys = slices.Insert(st.keys, i, k)
			}
		}
	}
	for i, dc := range dispatchChains {
		if inserted[i] == nil && !(i == dFilterServices && len(addIPs) > 0) {
			continue
		}
		ins := &edits[dc.table].ins
		pos := 0
		for _, k := range st.keys {
			block := st.ports[k].dispatch[i]
			if inserted[i][k] {
				for j, rule := range block {
					ins.WriteString("-I " + dc.chain + " " + strconv.Itoa(pos+j+1) + " " + rule + "\n")
				}
			}
			pos += len(block)
		}
		if i == dFilterServices {
			for _, ip := range addIPs {
				j, _ := slices.BinarySearchFunc(st.cips, ip, netip.Addr.Compare)
				ins.WriteString("-I " + dc.chain + " " + strconv.Itoa(pos+j+1) + " " + rejectRule(ip) + "\n")
			}
		}
	}
	var b bytes.Buffer
	for _, table := range []string{"filter", "nat"} {
		e := edits[table]
		if e.decl.Len()+e.dels.Len()+e.rules.Len()+e.ins.Len()+e.drop.Len() == 0 {
			continue
		}
		b.WriteString("*" + table + "\n")
		for _, part := range []*bytes.Buffer{&e.decl, &e.dels, &e.rules, &e.ins, &e.drop} {
			b.Write(part.Bytes())
		}
		b.WriteString("COMMIT\n")
	}
	if b.Len() == 0 {
		return nil
	}
	_, err := d.restore(ctx, f, backend, b.Bytes())
	return err
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

// ensureLocalnetJumps puts a jump to KUBE-FIREWALL first in filter INPUT
// and OUTPUT where there is none, as kube-proxy does; an existing one
// stays where it is.
func ensureLocalnetJumps(b *bytes.Buffer, filter *Table) {
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		var rules []string
		if filter != nil && filter.Chains[chain] != nil {
			rules = filter.Chains[chain].Rules
		}
		if !slices.ContainsFunc(rules, func(r string) bool { return jumpTarget(r) == chainLocalnetFirewall }) {
			fmt.Fprintf(b, "-I %s 1 -j %s\n", chain, chainLocalnetFirewall)
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
