package ipvs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Capabilities are what the IPVS dataplane can write: the ClusterIP
// masquerade rule matches "! -s <pod network>", one prefix per family.
var Capabilities = plan.Capabilities{Dataplane: "ipvs", PodPrefixes: 1, Schedulers: plan.Schedulers, DefaultScheduler: "rr"}

// Layer is the kernel layer the dataplane programs: Netlink, or Fake in
// tests.
type Layer interface {
	Apply(ctx context.Context, s State) (Result, error)
	ApplyChanges(ctx context.Context, prev, next State) (Result, error)
	Cleanup(ctx context.Context) error
}

// DataplaneOptions configure the IPVS dataplane.
type DataplaneOptions struct {
	// Families to program (default IPv4 and IPv6).
	Families []plan.Family
	// MasqueradeBit is the packet-mark bit that asks for masquerading
	// (default 14, mark 0x4000), 1 to 14: the bits next to it are the
	// dataplane's too, and the upper 16 bits number the bypasses (see
	// marks).
	MasqueradeBit uint
	// Kernel configures the kernel layer (exclude CIDRs, grace period).
	Kernel Options
	// Layer, when set, is the kernel layer instead of Netlink(Kernel).
	Layer Layer
	// IPTables holds the glue; nil: this namespace's iptables binaries,
	// of the backend the node uses.
	IPTables iptables.Kernel
	// NodeAddrs returns the node's addresses of a family, for NodePorts
	// on every local address; nil reads them over netlink, leaving out
	// kube-ipvs0's.
	NodeAddrs func(plan.Family) ([]netip.Addr, error)
	// StrictARP sets arp_ignore=1 and arp_announce=2 (kube-proxy's
	// ipvs.strictARP), so that the node does not answer ARP for the
	// addresses on kube-ipvs0.
	StrictARP bool
	// Timeouts are IPVS's connection timeouts (ipvs.tcpTimeout,
	// tcpFinTimeout, udpTimeout); a zero one is left as it is.
	Timeouts Timeouts
	// Sysctl writes one sysctl (name as under /proc/sys); nil writes it
	// in /proc/sys when it differs. Tests on a Fake record them instead.
	Sysctl func(name string, value int) error
	// Log receives the glue transactions at -v=9.
	Log logr.Logger
}

// Timeouts are IPVS's connection timeouts.
type Timeouts struct{ TCP, TCPFin, UDP time.Duration }

// Dataplane programs IPVS and its iptables glue from the plan. Not safe
// for concurrent use.
type Dataplane struct {
	opts     DataplaneOptions
	layer    Layer
	ipt      iptables.Kernel
	fams     map[plan.Family]*famState
	needFull bool
	recheck  time.Duration
	setUp    bool
	// applied is the State the last sync applied; nil until a sync
	// succeeds, and after one fails.
	applied *State
	// conflicts are the virtual-server conflicts reported, per family.
	conflicts map[plan.Family]map[string]bool
}

// famState is what the last sync rendered in one family.
type famState struct {
	ports map[plan.Key]*portState
	marks *markAllocator
	glue  string // the chains last written; "" forces a write
}

// NewDataplane returns the IPVS dataplane; it touches nothing until Sync
// or Cleanup.
func NewDataplane(opts DataplaneOptions) *Dataplane {
	if opts.MasqueradeBit == 0 {
		opts.MasqueradeBit = 14
	}
	if len(opts.Families) == 0 {
		opts.Families = plan.Families
	}
	if opts.Sysctl == nil {
		opts.Sysctl = writeSysctl
	}
	d := &Dataplane{opts: opts, layer: opts.Layer, ipt: opts.IPTables, needFull: true, conflicts: map[plan.Family]map[string]bool{}}
	if d.layer == nil {
		d.layer = NewNetlink(opts.Kernel)
	}
	d.reset()
	return d
}

func (d *Dataplane) reset() {
	d.fams = map[plan.Family]*famState{}
	for _, f := range d.opts.Families {
		d.fams[f] = &famState{ports: map[plan.Key]*portState{}, marks: newMarkAllocator(d.marks())}
	}
	d.needFull, d.applied = true, nil
}

// marks are the packet-mark bits the dataplane uses.
type marks struct {
	// masq asks for masquerading (MasqueradeBit), bypass says a bypass
	// took the packet (the bit above), local that the node takes the
	// packet in (the bit below; State.LocalMark).
	masq, bypass, local uint32
}

func (d *Dataplane) marks() marks {
	b := d.opts.MasqueradeBit
	return marks{masq: 1 << b, bypass: 1 << (b + 1), local: 1 << (b - 1)}
}

// RecheckAfter is when the last sync asked to run again: real servers are
// draining, to be deleted once their connections are gone (0: no need).
func (d *Dataplane) RecheckAfter() time.Duration { return d.recheck }

// Sync makes IPVS, the sets and the glue match the plan. A partial sync
// renders only the changed ports; the kernel layer then changes only
// what differs.
func (d *Dataplane) Sync(ctx context.Context, p *plan.Plan, ch plan.Changes) error {
	if err := p.Config.Check(Capabilities); err != nil {
		return err
	}
	if b := d.opts.MasqueradeBit; b < 1 || b > 14 {
		return fmt.Errorf("masquerade bit %d: the ipvs dataplane takes 1 to 14 (the bits beside it and the upper 16 are its own)", b)
	}
	err := d.sync(ctx, p, ch)
	if err != nil {
		d.reset()
	}
	return err
}

func (d *Dataplane) sync(ctx context.Context, p *plan.Plan, ch plan.Changes) error {
	full := ch.Full || d.needFull
	if full {
		if err := d.setUpHost(); err != nil {
			return err
		}
	}
	state := State{LocalMark: d.marks().local}
	for _, f := range d.opts.Families {
		state.LocalFamilies = append(state.LocalFamilies, map[plan.Family]Family{plan.IPv4: IPv4, plan.IPv6: IPv6}[f])
	}
	glue := map[plan.Family][]glueChain{}
	for _, f := range d.opts.Families {
		fs, err := d.render(p, ch, f, full)
		if err != nil {
			return err
		}
		d.fams[f] = fs
		chains, conflicts, err := fs.assemble(&state, f, d.marks())
		if err != nil {
			return err
		}
		d.reportConflicts(f, conflicts)
		glue[f] = chains
	}
	res, err := d.apply(ctx, full, state)
	if err != nil {
		return err
	}
	d.recheck, d.applied = res.RecheckAfter, &state
	for _, f := range d.opts.Families {
		if err := d.writeGlue(ctx, f, glue[f]); err != nil {
			return fmt.Errorf("ipvs %s glue: %w", f, err)
		}
	}
	d.needFull = false
	return nil
}

// reportConflicts logs, once while it lasts, each service port left
// without a virtual server another port of the same address, protocol
// and port holds (two Services claiming one external IP and port): the
// first in key order keeps it, as the first rule would in the other modes.
func (d *Dataplane) reportConflicts(f plan.Family, conflicts []string) {
	now := map[string]bool{}
	for _, c := range conflicts {
		now[c] = true
		if !d.conflicts[f][c] {
			d.opts.Log.Info("Warning: two service ports claim one virtual server; the first keeps it", "ipFamily", f, "conflict", c)
		}
	}
	d.conflicts[f] = now
}

// apply hands the state to the kernel layer: in a partial sync, as the
// change from the last state applied, so that the kernel is read only
// where real servers go; in a full one, or while real servers drain, over
// the kernel read whole.
func (d *Dataplane) apply(ctx context.Context, full bool, state State) (Result, error) {
	if full || d.applied == nil || d.recheck > 0 {
		return d.layer.Apply(ctx, state)
	}
	return d.layer.ApplyChanges(ctx, *d.applied, state)
}

// render renders the ports of family f: all of them in a full sync, else
// the changed ones over the last sync's.
func (d *Dataplane) render(p *plan.Plan, ch plan.Changes, f plan.Family, full bool) (*famState, error) {
	addrs, err := d.nodePortAddrs(p.NodePorts(f), f)
	if err != nil {
		return nil, err
	}
	old := d.fams[f]
	fs := &famState{ports: old.ports, marks: old.marks, glue: old.glue}
	r := &renderer{fam: f, nodePortAddrs: addrs, marks: fs.marks}
	if full {
		fs.ports = map[plan.Key]*portState{}
		fs.marks = newMarkAllocator(d.marks())
		r.marks = fs.marks
		for _, sp := range p.PortsOf(f) {
			if fs.ports[sp.Key], err = r.port(sp); err != nil {
				return nil, err
			}
		}
		return fs, nil
	}
	fs.ports = maps.Clone(old.ports)
	for k := range ch.Keys {
		if k.Family != f {
			continue
		}
		delete(fs.ports, k)
		fs.marks.release(k)
		if sp := p.Ports[k]; sp != nil {
			if fs.ports[k], err = r.port(sp); err != nil {
				return nil, err
			}
		}
	}
	return fs, nil
}

// assemble adds the family's ports to state, in key order (where two ports
// claim the same virtual server, the first keeps it, and the other is
// listed in the conflicts), with the family's sets, and returns its glue.
func (fs *famState) assemble(state *State, f plan.Family, m marks) (glue []glueChain, conflicts []string, err error) {
	keys := slices.SortedFunc(maps.Keys(fs.ports), plan.Key.Compare)
	owner := map[serviceKey]plan.Key{}
	seenAddr := map[netip.Addr]bool{}
	for _, a := range state.Addresses {
		seenAddr[a] = true
	}
	sets := familySets(f)
	type entryKey struct {
		set   string
		entry Entry // without its comment
	}
	seenEntry := map[entryKey]bool{}
	var masq *plan.Masquerade
	var bypass []string
	for _, k := range keys {
		ps := fs.ports[k]
		for _, vs := range ps.services {
			if first, taken := owner[vs.key()]; taken {
				conflicts = append(conflicts, fmt.Sprintf("%s: virtual server %s is %s's", k, vs.key(), first))
				continue
			}
			owner[vs.key()] = k
			state.Services = append(state.Services, vs)
		}
		for _, a := range ps.addresses {
			if !seenAddr[a] {
				seenAddr[a] = true
				state.Addresses = append(state.Addresses, a)
			}
		}
		for _, base := range slices.Sorted(maps.Keys(ps.entries)) {
			set := sets[base]
			for _, e := range ps.entries[base] {
				id := entryKey{base, e}
				id.entry.Comment = ""
				if !seenEntry[id] {
					seenEntry[id] = true
					set.Entries = append(set.Entries, e)
				}
			}
		}
		if m := ps.internalMasq; m != nil {
			if masq != nil && !sameMasquerade(*masq, *m) {
				return nil, nil, fmt.Errorf("%s: ClusterIP traffic masqueraded %v, other ports' %v: the ipvs dataplane masquerades every ClusterIP alike", k, *m, *masq)
			}
			masq = m
		}
		bypass = append(bypass, ps.bypass...)
	}
	for _, base := range slices.Sorted(maps.Keys(sets)) {
		state.Sets = append(state.Sets, *sets[base])
	}
	return glueChains(f, m, masq, bypass), conflicts, nil
}

// familySets are family f's sets, empty.
func familySets(f plan.Family) map[string]*Set {
	sets := map[string]*Set{}
	for base, t := range setTypes {
		set := &Set{Name: setName(f, base), Type: t, Family: IPv4}
		if f == plan.IPv6 {
			set.Family = IPv6
		}
		if t == BitmapPort {
			set.Family = ""
		}
		sets[base] = set
	}
	return sets
}

func sameMasquerade(a, b plan.Masquerade) bool {
	return a.Mode == b.Mode && slices.Equal(a.Except, b.Except)
}

// nodePortAddrs are the addresses whose NodePorts get virtual servers.
func (d *Dataplane) nodePortAddrs(n plan.NodePortAddrs, f plan.Family) ([]netip.Addr, error) {
	if !n.AnyLocal {
		return n.IPs, nil
	}
	read := d.opts.NodeAddrs
	if read == nil {
		read = localAddrs
	}
	all, err := read(f)
	if err != nil {
		return nil, fmt.Errorf("reading the node's addresses for NodePorts: %w", err)
	}
	return slices.DeleteFunc(all, func(a netip.Addr) bool {
		return (a.IsLoopback() && !n.Loopback) || a.IsLinkLocalUnicast()
	}), nil
}

// localAddrs reads the node's addresses of family f, but kube-ipvs0's.
func localAddrs(f plan.Family) ([]netip.Addr, error) {
	family := netlink.FAMILY_V4
	if f == plan.IPv6 {
		family = netlink.FAMILY_V6
	}
	skip := -1
	if link, err := netlink.LinkByName("kube-ipvs0"); err == nil {
		skip = link.Attrs().Index
	}
	addrs, err := netlink.AddrList(nil, family)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if a.LinkIndex == skip {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// writeGlue writes family f's chains when they differ from the last ones
// written.
func (d *Dataplane) writeGlue(ctx context.Context, f plan.Family, chains []glueChain) error {
	text := glueText(chains)
	fs := d.fams[f]
	if text == fs.glue {
		return nil
	}
	k := d.iptables(ctx)
	existing, err := k.Save(ctx, f)
	if err != nil {
		return err
	}
	tx := glueTransaction(existing, chains)
	if v := d.opts.Log.V(9); v.Enabled() {
		v.Info("Running iptables-restore", "ipFamily", f, "backend", k.Backend(), "input", tx.String())
	}
	if err := k.Restore(ctx, f, tx); err != nil {
		return err
	}
	fs.glue = text
	return nil
}

func glueText(chains []glueChain) string {
	var b strings.Builder
	for _, c := range chains {
		fmt.Fprintf(&b, "%s %s\n", c.table, c.chain.Name)
		for _, r := range c.chain.Rules {
			b.WriteString("  " + r + "\n")
		}
	}
	return b.String()
}

func (d *Dataplane) iptables(ctx context.Context) iptables.Kernel {
	if d.ipt == nil {
		d.ipt = iptables.Binaries(iptables.DetectBackend(ctx), nil)
	}
	return d.ipt
}

// Cleanup removes the glue (in every iptables backend when none was
// given), then the virtual servers, kube-ipvs0 and the sets.
func (d *Dataplane) Cleanup(ctx context.Context) error {
	kernels := []iptables.Kernel{d.opts.IPTables}
	if d.opts.IPTables == nil {
		kernels = []iptables.Kernel{iptables.Binaries("nft", nil), iptables.Binaries("legacy", nil)}
	}
	var errs []error
	for _, f := range d.opts.Families {
		for _, k := range kernels {
			existing, err := k.Save(ctx, f)
			if err != nil {
				if !iptables.MissingBinary(err) {
					errs = append(errs, fmt.Errorf("ipvs %s glue cleanup (%s): %w", f, k.Backend(), err))
				}
				continue
			}
			if tx := cleanupTransaction(existing); !tx.Empty() {
				errs = append(errs, k.Restore(ctx, f, tx))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err // the sets stay while rules may name them
	}
	d.reset()
	if _, isKernel := d.layer.(*Netlink); isKernel && !Loaded() {
		return nil // no IPVS here, so no virtual server, address or set of ours
	}
	return d.layer.Cleanup(ctx)
}

// Loaded reports whether the kernel of the calling thread's network
// namespace has IPVS (the ip_vs module loaded), without loading it.
func Loaded() bool {
	_, err := os.Stat("/proc/thread-self/net/ip_vs")
	return err == nil
}

// Available loads ip_vs if it is not (as kube-proxy and moby/ipvs do, with
// modprobe) and says why IPVS mode cannot run when the kernel still lacks
// it.
func Available() error {
	if Loaded() {
		return nil
	}
	out, err := exec.Command("modprobe", "ip_vs").CombinedOutput()
	if Loaded() {
		return nil
	}
	return fmt.Errorf("the kernel has no IPVS (no /proc/net/ip_vs; modprobe ip_vs: %v: %s)", err, strings.TrimSpace(string(out)))
}

// HasGlue reports whether the node holds this mode's glue (one of the
// chains only it writes), in the family it programs first: the node ran
// in ipvs mode last, so the iptables mode's leftovers are long gone, and
// cleaning them up would only take the chains the two modes share away
// until the first sync.
func (d *Dataplane) HasGlue(ctx context.Context) bool {
	tables, err := d.iptables(ctx).Save(ctx, d.opts.Families[0])
	return err == nil && hasOwnChains(tables)
}

// connReuseBroken says whether the kernel (its release, "6.1.0-57-amd64")
// predates Linux 5.9, where conn_reuse_mode 1 (the default) delays a new
// connection that reuses the ports of one IPVS still remembers by a
// second; kube-proxy sets 0 there and leaves later kernels alone. Mode 0
// sends such a connection to the old one's real server, even a removed
// one: in the lab's rolling update under load, about one request in a
// hundred timed out, sent to a deleted pod.
func connReuseBroken(release string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major < 5 || major == 5 && minor < 9
}

// kernelRelease is the running kernel's release, "" if unknown.
func kernelRelease() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// setUpHost writes the sysctls IPVS mode needs, as kube-proxy does:
// conntrack for IPVS connections (the glue's masquerading needs it),
// forwarding, and kube-proxy's connection-reuse settings; strictARP; and
// the IPVS timeouts.
func (d *Dataplane) setUpHost() error {
	if d.setUp {
		return nil
	}
	values := map[string]int{
		"net/ipv4/vs/conntrack":                 1,
		"net/ipv4/vs/expire_nodest_conn":        1,
		"net/ipv4/vs/expire_quiescent_template": 1,
		"net/ipv4/ip_forward":                   1,
	}
	if connReuseBroken(kernelRelease()) {
		values["net/ipv4/vs/conn_reuse_mode"] = 0
	}
	if d.opts.StrictARP {
		values["net/ipv4/conf/all/arp_ignore"] = 1
		values["net/ipv4/conf/all/arp_announce"] = 2
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(values)) {
		errs = append(errs, d.opts.Sysctl(name, values[name]))
	}
	if t := d.opts.Timeouts; t != (Timeouts{}) {
		if n, ok := d.layer.(*Netlink); ok {
			errs = append(errs, n.SetTimeouts(t))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ipvs host setup: %w", err)
	}
	d.setUp = true
	return nil
}

var sysctlMu sync.Mutex

// writeSysctl writes a sysctl of the calling thread's network namespace
// when it differs.
func writeSysctl(name string, v int) error {
	sysctlMu.Lock()
	defer sysctlMu.Unlock()
	path := filepath.Join("/proc/sys", name)
	want := strconv.Itoa(v)
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == want {
		return nil
	}
	return os.WriteFile(path, []byte(want+"\n"), 0o644)
}
