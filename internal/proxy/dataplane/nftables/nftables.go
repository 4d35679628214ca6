// Package nftables is svcproxy's default dataplane: it renders the plan into
// one nftables table per IP family ("ip svcproxy" and "ip6 svcproxy").
//
// Dispatch goes through verdict maps keyed by address . protocol . port, so
// the cost of a new connection does not grow with the number of Services;
// endpoints are elements of a few shared maps, picked by a random index;
// writes are atomic transactions; partial syncs rewrite only the chains of
// changed service ports and add or delete single map elements, over netlink
// when that is all they do. README.md shows the layout and why.
package nftables

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	"sigs.k8s.io/knftables"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Options configure the dataplane.
type Options struct {
	// Table is the name of the table in each family (default "svcproxy").
	Table string
	// MasqueradeBit is the packet-mark bit that asks for masquerading
	// (default 14, kube-proxy's --iptables-masquerade-bit).
	MasqueradeBit uint
	// Families to program (default IPv4 and IPv6).
	Families []plan.Family
	// NewInterface opens a table; default knftables.New. Tests pass fakes.
	NewInterface func(family knftables.Family, table string) (knftables.Interface, error)
	// Fallback, when set, is called with netlink's error each time a write
	// meant for netlink (endpoint map elements) goes through nft instead:
	// the same result, only slower. The agent logs and counts it.
	Fallback func(err error)
	// Log receives, at -v=9, every transaction sent with nft, as
	// kube-proxy logs them; the zero Logger discards.
	Log logr.Logger
}

// Dataplane programs nftables. Not safe for concurrent use.
type Dataplane struct {
	opts     Options
	families []*family
}

// New returns a dataplane; it talks to the kernel only when Sync or
// Cleanup run.
func New(opts Options) *Dataplane {
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	if opts.MasqueradeBit == 0 {
		opts.MasqueradeBit = 14
	}
	if len(opts.Families) == 0 {
		opts.Families = plan.Families
	}
	realKernel := opts.NewInterface == nil
	if realKernel {
		// Listing over netlink reads only the names of chains, sets and
		// maps; nft would print every rule as JSON first (tens of MB at
		// 10,000 Services, parsed on every full sync).
		opts.NewInterface = func(f knftables.Family, t string) (knftables.Interface, error) {
			return knftables.New(f, t, knftables.UseNetlink)
		}
	}
	d := &Dataplane{opts: opts}
	for _, f := range opts.Families {
		fam := &family{fam: f, w: wordsFor(f), needFull: true, fallback: opts.Fallback}
		if realKernel {
			fam.elements = newElementWriter(opts.Table, f)
		}
		d.families = append(d.families, fam)
	}
	return d
}

// Sync makes every family's table match the plan.
func (d *Dataplane) Sync(ctx context.Context, p *plan.Plan, ch plan.Changes) error {
	var errs []error
	for _, f := range d.families {
		if err := d.open(f); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := f.sync(ctx, p, ch, d.opts.MasqueradeBit); err != nil {
			errs = append(errs, fmt.Errorf("nftables %s sync: %w", f.fam, err))
		}
	}
	return errors.Join(errs...)
}

// Cleanup deletes the tables of every family.
func (d *Dataplane) Cleanup(ctx context.Context) error {
	var errs []error
	for _, f := range d.families {
		if err := d.open(f); err != nil {
			errs = append(errs, err)
			continue
		}
		tx := f.nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		if err := f.nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("nftables %s cleanup: %w", f.fam, err))
		}
		f.forget()
	}
	return errors.Join(errs...)
}

func (d *Dataplane) open(f *family) error {
	if f.nft != nil {
		return nil
	}
	kf := knftables.IPv4Family
	if f.fam == plan.IPv6 {
		kf = knftables.IPv6Family
	}
	nft, err := d.opts.NewInterface(kf, d.opts.Table)
	if err != nil {
		return fmt.Errorf("nftables %s: %w", f.fam, err)
	}
	f.nft = loggedTransactions{nft, d.opts.Log.WithValues("ipFamily", f.fam)}
	return nil
}

// loggedTransactions logs each transaction at -v=9 before running it.
type loggedTransactions struct {
	knftables.Interface
	log logr.Logger
}

func (l loggedTransactions) Run(ctx context.Context, tx *knftables.Transaction) error {
	if v := l.log.V(9); v.Enabled() {
		v.Info("Running nftables transaction", "transaction", tx.String())
	}
	return l.Interface.Run(ctx, tx)
}

// family is the state of one family's table: what the last successful sync
// wrote, so that the next partial sync can send only the difference.
type family struct {
	fam      plan.Family
	w        words
	nft      knftables.Interface
	needFull bool

	written map[plan.Key]*portObjects
	claims  *claims
	shared  map[string]int // balancing chain -> number of ports using it
	gen     int            // generation of the endpoint maps in use

	elements *elementWriter // nil with a fake kernel
	fallback func(err error)
}

// fellBack reports that netlink refused a write that nft makes next.
func (f *family) fellBack(err error) {
	if f.fallback != nil {
		f.fallback(fmt.Errorf("nftables %s: netlink: %w (nft writes it instead)", f.fam, err))
	}
}

func (f *family) forget() {
	f.written, f.claims, f.shared, f.needFull = nil, nil, nil, true
}

func (f *family) renderer(p *plan.Plan, gen int) *renderer {
	return &renderer{w: f.w, gen: gen}
}

func (f *family) sync(ctx context.Context, p *plan.Plan, ch plan.Changes, masqBit uint) error {
	var err error
	if ch.Full || f.needFull {
		err = f.fullSync(ctx, p, masqBit)
	} else {
		err = f.partialSync(ctx, p, ch)
	}
	if err != nil {
		f.forget()
	}
	return err
}

// fullSync rewrites the whole table: it fills a fresh generation of the
// endpoint maps, then one transaction replaces everything else and switches
// to them. Map and set contents are replaced, chains are flushed and
// refilled, and anything the table holds that the plan no longer needs is
// deleted. Affinity sets are never flushed, so clients keep their endpoints.
func (f *family) fullSync(ctx context.Context, p *plan.Plan, masqBit uint) error {
	existing, err := f.existing(ctx)
	if err != nil {
		return err
	}
	gen := 0
	if slices.Contains(existing.maps, endpointMapList[0].name(0)) {
		gen = 1 // generation 0 is in use: fill generation 1
	}
	r := f.renderer(p, gen)
	all := renderAll(r, p.PortsOf(f.fam))
	endpointElems, otherElems := all.claims.effective(endpointMapsOf(gen))
	if err := f.fillEndpointMaps(ctx, gen, endpointElems); err != nil {
		return err
	}
	tx := f.fullTransaction(r.fixed(p.NodePorts(f.fam), masqBit), all, otherElems, existing, gen)
	if err := f.nft.Run(ctx, tx); err != nil {
		return err
	}
	f.written, f.claims, f.shared, f.gen, f.needFull = all.written, all.claims, all.shared, gen, false
	return nil
}

// rendered is every port's objects, as a full sync writes them.
type rendered struct {
	written    map[plan.Key]*portObjects
	claims     *claims
	shared     map[string]int      // balancing chain -> number of users
	sharedDefs map[string]chainDef // balancing chain -> its definition
}

func renderAll(r *renderer, ports []*plan.ServicePort) *rendered {
	all := &rendered{written: map[plan.Key]*portObjects{}, claims: newClaims(), shared: map[string]int{}, sharedDefs: map[string]chainDef{}}
	for _, sp := range ports {
		o := r.port(sp)
		all.written[sp.Key] = o
		all.claims.update(nil, o)
		for _, c := range uniqueShared(o) {
			all.shared[c.name]++
			all.sharedDefs[c.name] = c
		}
	}
	return all
}

// fullTransaction builds the full sync's transaction: objects first, then
// every existing chain flushed (so no stale rule refers to what is deleted
// at the end), elements, rules, and the deletion of what is not wanted.
func (f *family) fullTransaction(fx *fixed, all *rendered, elems []elemDef, existing *tableContents, gen int) *knftables.Transaction {
	tx := f.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: ptr("svcproxy: Kubernetes Services")})
	want := map[string]bool{}
	for _, m := range endpointMaps(f.w, gen) {
		want[m.Name] = true
	}
	var chains []chainDef // every chain but the base ones, with its rules
	chains = append(chains, fx.regular...)
	for _, name := range slices.Sorted(maps.Keys(all.sharedDefs)) {
		chains = append(chains, all.sharedDefs[name])
	}
	for _, k := range sortedKeys(all.written) {
		chains = append(chains, all.written[k].chains...)
		for _, s := range all.written[k].sets {
			tx.Add(affinitySet(s, f.w))
			want[s.name] = true
		}
	}
	for _, b := range fx.base {
		tx.Add(&knftables.Chain{Name: b.name, Type: &b.typ, Hook: &b.hook, Priority: &b.priority})
		want[b.name] = true
	}
	for _, c := range chains {
		tx.Add(&knftables.Chain{Name: c.name})
		want[c.name] = true
	}
	for _, m := range fx.maps {
		tx.Add(m)
		tx.Flush(m)
		want[m.Name] = true
	}
	for _, s := range fx.sets {
		tx.Add(s)
		tx.Flush(s)
		want[s.Name] = true
	}
	for _, name := range existing.chains {
		tx.Flush(&knftables.Chain{Name: name})
	}
	for _, e := range append(fx.elems, elems...) {
		tx.Add(e.element())
	}
	for _, b := range fx.base {
		addRules(tx, b.name, b.rules)
	}
	for _, c := range chains {
		addRules(tx, c.name, c.rules)
	}
	deleteUnwanted(tx, existing, want)
	return tx
}

func deleteUnwanted(tx *knftables.Transaction, existing *tableContents, want map[string]bool) {
	for _, name := range existing.chains {
		if !want[name] {
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for _, name := range existing.sets {
		if !want[name] {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
	for _, name := range existing.maps {
		if !want[name] {
			tx.Delete(&knftables.Map{Name: name})
		}
	}
}

// fillEndpointMaps creates the endpoint maps of generation gen, empty, and
// fills them, before the full sync's transaction: nothing refers to them
// until that transaction switches the balancing chains over, atomically,
// and deletes the other generation. Sending the bulk of the elements over
// netlink spares nft parsing them (a second at 100,000 endpoints) and the
// agent a 17 MB transaction text.
func (f *family) fillEndpointMaps(ctx context.Context, gen int, elems []elemDef) error {
	tx := f.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: ptr("svcproxy: Kubernetes Services")})
	for _, m := range endpointMaps(f.w, gen) {
		tx.Add(m)
		tx.Flush(m)
	}
	if f.elements != nil {
		if err := f.nft.Run(ctx, tx); err != nil {
			return err
		}
		err := f.elements.writeAll(elems)
		if err == nil {
			return nil
		}
		// Netlink refused; nft can still do it, only slower. Adding an
		// element that a failed batch already added is not an error.
		f.fellBack(fmt.Errorf("filling the endpoint maps: %w", err))
		tx = f.nft.NewTransaction()
	}
	for _, g := range elems {
		for _, e := range g.expand() {
			tx.Add(e.element())
		}
	}
	return f.nft.Run(ctx, tx)
}

// endpointMapsOf tells whether a map is one of generation gen's endpoint maps.
func endpointMapsOf(gen int) func(string) bool {
	names := map[string]bool{}
	for _, m := range endpointMapList {
		names[m.name(gen)] = true
	}
	return func(into string) bool { return names[into] }
}

// addRules appends rules to a chain that the transaction has emptied or
// just created.
func addRules(tx *knftables.Transaction, chain string, rules []string) {
	for _, r := range rules {
		tx.Add(&knftables.Rule{Chain: chain, Rule: r})
	}
}

// partialSync sends only what changed for the changed service ports:
// their chains (rewritten whole, or deleted) and their map elements.
func (f *family) partialSync(ctx context.Context, p *plan.Plan, ch plan.Changes) error {
	var keys []plan.Key
	for k := range ch.Keys {
		if k.Family == f.fam {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareKeys)
	r := f.renderer(p, f.gen)
	next := map[plan.Key]*portObjects{}
	for _, k := range keys {
		if sp := p.Ports[k]; sp != nil {
			next[k] = r.port(sp)
		}
	}
	// Claims and counts change in place; if the sync fails the family
	// forgets everything and the next sync is full.
	dels, adds := f.updateClaims(keys, next)
	newShared, staleShared := f.updateShared(keys, next)
	tx := f.partialTransaction(keys, next, dels, adds, newShared, staleShared)
	if err := f.run(ctx, tx, dels, adds); err != nil {
		return err
	}
	for _, k := range keys {
		if o := next[k]; o == nil {
			delete(f.written, k)
		} else {
			f.written[k] = o
		}
	}
	return nil
}

// updateClaims moves the claims of the ports in keys to their next objects
// and returns the elements the table must lose and gain.
func (f *family) updateClaims(keys []plan.Key, next map[plan.Key]*portObjects) (dels, adds []elemDef) {
	var touched []elemID
	for _, k := range keys {
		for _, e := range append(elemsOf(f.written[k]), elemsOf(next[k])...) {
			touched = append(touched, idOf(e))
		}
	}
	before := f.claims.snapshot(touched)
	for _, k := range keys {
		f.claims.update(f.written[k], next[k])
	}
	return expandChanges(f.claims.diff(before, touched))
}

// partialTransaction sends what changed: new chains and sets first (so
// elements and rules can refer to them), element deletions and additions,
// rewritten chains, then stale chains emptied and deleted, and stale sets.
func (f *family) partialTransaction(keys []plan.Key, next map[plan.Key]*portObjects, dels, adds []elemDef, newShared []chainDef, staleShared []string) *knftables.Transaction {
	tx := f.nft.NewTransaction()
	for _, c := range newShared {
		tx.Add(&knftables.Chain{Name: c.name})
		addRules(tx, c.name, c.rules)
	}
	for _, k := range keys {
		for _, s := range onlyIn(setsOf(next[k]), setsOf(f.written[k])) {
			tx.Add(affinitySet(s, f.w))
		}
		for _, c := range onlyIn(chainsOf(next[k]), chainsOf(f.written[k])) {
			tx.Add(&knftables.Chain{Name: c.name})
		}
	}
	for _, e := range dels {
		tx.Delete(e.element())
	}
	for _, e := range adds {
		tx.Add(e.element())
	}
	stale := staleShared
	var staleSets []string
	for _, k := range keys {
		for _, c := range changedChains(f.written[k], next[k]) {
			tx.Flush(&knftables.Chain{Name: c.name})
			addRules(tx, c.name, c.rules)
		}
		for _, c := range onlyIn(chainsOf(f.written[k]), chainsOf(next[k])) {
			stale = append(stale, c.name)
		}
		for _, s := range onlyIn(setsOf(f.written[k]), setsOf(next[k])) {
			staleSets = append(staleSets, s.name)
		}
	}
	for _, name := range stale {
		tx.Flush(&knftables.Chain{Name: name})
	}
	for _, name := range stale {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, name := range staleSets {
		tx.Delete(&knftables.Set{Name: name})
	}
	return tx
}

// run applies a partial transaction: over netlink when it holds nothing
// but endpoint elements (the usual endpoint change), else with nft.
func (f *family) run(ctx context.Context, tx *knftables.Transaction, dels, adds []elemDef) error {
	switch {
	case tx.NumOperations() == 0:
		return nil
	case f.elements != nil && tx.NumOperations() == len(dels)+len(adds) && f.elements.eligible(dels, adds):
		err := f.elements.write(dels, adds)
		if err == nil {
			return nil
		}
		// A netlink batch is atomic: nothing of it applied, nft can retry.
		f.fellBack(fmt.Errorf("writing %d endpoint elements: %w", len(dels)+len(adds), err))
	}
	return f.nft.Run(ctx, tx)
}

// updateShared recounts the users of balancing chains after the ports in
// keys change to next, and returns the chains now needed for the first time
// and the names of those no port needs any more.
func (f *family) updateShared(keys []plan.Key, next map[plan.Key]*portObjects) (added []chainDef, stale []string) {
	defs := map[string]chainDef{}
	before := map[string]int{}
	for _, k := range keys {
		for _, o := range []*portObjects{f.written[k], next[k]} {
			for _, c := range uniqueShared(o) {
				defs[c.name] = c
				before[c.name] = f.shared[c.name]
			}
		}
	}
	for _, k := range keys {
		for _, c := range uniqueShared(f.written[k]) {
			f.shared[c.name]--
		}
		for _, c := range uniqueShared(next[k]) {
			f.shared[c.name]++
		}
	}
	for _, name := range slices.Sorted(maps.Keys(defs)) {
		switch now := f.shared[name]; {
		case before[name] == 0 && now > 0:
			added = append(added, defs[name])
		case before[name] > 0 && now == 0:
			delete(f.shared, name)
			stale = append(stale, name)
		}
	}
	return added, stale
}

// named is a table object known by its name.
type named interface{ id() string }

func (c chainDef) id() string { return c.name }
func (s setDef) id() string   { return s.name }

// onlyIn returns the objects of a whose names b lacks.
func onlyIn[T named](a, b []T) []T {
	in := map[string]bool{}
	for _, x := range b {
		in[x.id()] = true
	}
	var out []T
	for _, x := range a {
		if !in[x.id()] {
			out = append(out, x)
		}
	}
	return out
}

func chainsOf(o *portObjects) []chainDef {
	if o == nil {
		return nil
	}
	return o.chains
}

func setsOf(o *portObjects) []setDef {
	if o == nil {
		return nil
	}
	return o.sets
}

// uniqueShared returns a port's balancing chains, each once.
func uniqueShared(o *portObjects) []chainDef {
	if o == nil {
		return nil
	}
	var out []chainDef
	seen := map[string]bool{}
	for _, c := range o.shared {
		if !seen[c.name] {
			seen[c.name] = true
			out = append(out, c)
		}
	}
	return out
}

func affinitySet(s setDef, w words) *knftables.Set {
	return &knftables.Set{
		Name:    s.name,
		Type:    w.addrType,
		Flags:   []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
		Timeout: ptr(secondsDuration(s.timeout)),
	}
}

func elemsOf(o *portObjects) []elemDef {
	if o == nil {
		return nil
	}
	return o.elems
}

// changedChains returns the chains of next that are new or whose rules differ.
func changedChains(prev, next *portObjects) []chainDef {
	if next == nil {
		return nil
	}
	old := map[string][]string{}
	if prev != nil {
		for _, c := range prev.chains {
			old[c.name] = c.rules
		}
	}
	var out []chainDef
	for _, c := range next.chains {
		if rules, ok := old[c.name]; !ok || !slices.Equal(rules, c.rules) {
			out = append(out, c)
		}
	}
	return out
}

// tableContents is what the kernel's table holds before a full sync.
type tableContents struct {
	chains, sets, maps []string
}

func (f *family) existing(ctx context.Context) (*tableContents, error) {
	all, err := f.nft.ListAll(ctx)
	if err != nil && !knftables.IsNotFound(err) && !noTable(err) {
		return nil, fmt.Errorf("listing table: %w", err)
	}
	return &tableContents{chains: all["chain"], sets: notAnonymous(all["set"]), maps: notAnonymous(all["map"])}, nil
}

// notAnonymous leaves out anonymous sets and maps (the kernel's "__set0" of a rule
// like "ip daddr { a, b }"): they belong to their rule, and the netlink
// listing shows them where nft's does not.
func notAnonymous(names []string) []string {
	return slices.DeleteFunc(names, func(n string) bool { return strings.HasPrefix(n, "__") })
}

// noTable recognises netlink's answer for a table that does not exist yet
// (ENOENT), which knftables' netlink listing passes through as is.
func noTable(err error) bool {
	return errors.Is(err, syscall.ENOENT) || strings.Contains(err.Error(), syscall.ENOENT.Error())
}

func sortedKeys(m map[plan.Key]*portObjects) []plan.Key {
	keys := make([]plan.Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

func compareKeys(a, b plan.Key) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}
