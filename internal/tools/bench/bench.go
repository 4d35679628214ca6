package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/internal/netwire"
	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/ipvs"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Options say what to measure.
type Options struct {
	Sizes     []int // numbers of Services
	Endpoints int   // endpoints per Service
	Changes   int   // single-endpoint changes timed per size
	// Dataplanes are measured one after the other at each size, each in a
	// fresh network namespace of the same kernel: one of Dataplanes.
	Dataplanes []string
	// Scheduler, when set, is chosen by every Service (the
	// svcproxy.io/scheduler annotation).
	Scheduler string
}

// Dataplanes are the dataplanes the bench can measure.
// ipvs needs a kernel with IPVS (make bench-ipvs runs in the test VM).
var Dataplanes = []string{"nftables", "iptables", "iptables-legacy", "ipvs"}

// Result is one row of the table.
type Result struct {
	Services, Endpoints             int
	Plan                            time.Duration // building the plan from the objects
	Cold                            time.Duration // first full sync into an empty table
	ChangeP50, ChangeP90, ChangeMax time.Duration
}

// Run measures each size with each dataplane, each in a fresh network
// namespace, and writes the table.
func Run(ctx context.Context, out io.Writer, opts Options) error {
	for _, name := range opts.Dataplanes {
		if !slices.Contains(Dataplanes, name) {
			return fmt.Errorf("unknown dataplane %q: want one of %v", name, Dataplanes)
		}
	}
	sched := "no scheduler chosen"
	if opts.Scheduler != "" {
		sched = "every Service choosing scheduler " + opts.Scheduler
	}
	fmt.Fprintf(out, "%d endpoints per Service, %s, %d single-endpoint changes per size, kernel %s\n\n", opts.Endpoints, sched, opts.Changes, kernelRelease())
	for _, name := range opts.Dataplanes {
		if err := inFreshNetns(func() error { return warmUp(ctx, name) }); err != nil {
			return fmt.Errorf("%s, warming up: %w", name, err)
		}
	}
	fmt.Fprintf(out, "%-16s %-9s %-10s %-10s %-12s %-12s %-12s %-12s\n", "dataplane", "services", "endpoints", "plan", "cold sync", "change p50", "change p90", "change max")
	for _, n := range opts.Sizes {
		for _, name := range opts.Dataplanes {
			var r Result
			err := inFreshNetns(func() (err error) {
				r, err = measure(ctx, n, name, opts)
				return err
			})
			if err != nil {
				return fmt.Errorf("%s, %d services: %w", name, n, err)
			}
			fmt.Fprintf(out, "%-16s %-9d %-10d %-10s %-12s %-12s %-12s %-12s\n", name, r.Services, r.Services*r.Endpoints,
				round(r.Plan), round(r.Cold), round(r.ChangeP50), round(r.ChangeP90), round(r.ChangeMax))
		}
	}
	limit := "none (Go's default GC)"
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		limit = fmt.Sprintf("%d MiB (GOMEMLIMIT)", l>>20)
	}
	fmt.Fprintf(out, "\npeak RSS of this process (VmHWM) over every row, objects and plans included: %d MiB; soft memory limit: %s\n", vmHWM()>>20, limit)
	return nil
}

func round(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }

// newDataplane returns a dataplane and what it can write.
func newDataplane(name string) (dataplane.Dataplane, plan.Capabilities, error) {
	switch name {
	case "nftables":
		return nftables.New(nftables.Options{Families: []plan.Family{plan.IPv4}}), nftables.Capabilities, nil
	case "iptables":
		return iptables.New(iptables.Options{Families: []plan.Family{plan.IPv4}}), iptables.Capabilities, nil
	case "iptables-legacy":
		return iptables.New(iptables.Options{Families: []plan.Family{plan.IPv4}, Backend: "legacy"}), iptables.Capabilities, nil
	case "ipvs":
		return ipvs.NewDataplane(ipvs.DataplaneOptions{Families: []plan.Family{plan.IPv4}}), ipvs.Capabilities, nil
	}
	return nil, plan.Capabilities{}, fmt.Errorf("unknown dataplane %q", name)
}

func measure(ctx context.Context, n int, dataplane string, opts Options) (Result, error) {
	r := Result{Services: n, Endpoints: opts.Endpoints}
	svcs, eps := workload(n, opts.Endpoints)
	dp, caps, err := newDataplane(dataplane)
	if err != nil {
		return r, err
	}
	if opts.Scheduler != "" {
		for _, s := range svcs {
			s.Annotations = map[string]string{plan.AnnotationScheduler: opts.Scheduler}
		}
	}
	tr := plan.NewTracker(plan.Config{NodeName: "bench-node", Dataplane: caps})
	start := time.Now()
	for _, s := range eps {
		tr.SetSlice(s)
	}
	for _, s := range svcs {
		tr.SetService(s)
	}
	p, ch := tr.Sync()
	r.Plan = time.Since(start)
	if errs := tr.Errors(); len(errs) > 0 {
		return r, errs[0]
	}
	defer dp.Cleanup(ctx)
	start = time.Now()
	if err := dp.Sync(ctx, p, ch); err != nil {
		return r, fmt.Errorf("cold sync: %w", err)
	}
	r.Cold = time.Since(start)

	var times []time.Duration
	for i := 0; i < opts.Changes; i++ {
		// One endpoint of one Service is replaced, as when a pod restarts.
		tr.SetSlice(slice(i*7919%n, opts.Endpoints, i+1))
		start = time.Now()
		p, ch = tr.Sync()
		if err := dp.Sync(ctx, p, ch); err != nil {
			return r, fmt.Errorf("change %d: %w", i, err)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	if len(times) > 0 {
		r.ChangeP50, r.ChangeP90, r.ChangeMax = times[len(times)/2], times[len(times)*9/10], times[len(times)-1]
	}
	return r, nil
}

// warmUp syncs one Service with the dataplane, untimed, so that the
// kernel has loaded the modules it needs (nf_tables, ip_vs and their
// helpers load on first use) before the first measured sync.
func warmUp(ctx context.Context, name string) error {
	dp, caps, err := newDataplane(name)
	if err != nil {
		return err
	}
	tr := plan.NewTracker(plan.Config{NodeName: "bench-node", Dataplane: caps})
	svcs, eps := workload(1, 1)
	tr.SetService(svcs[0])
	tr.SetSlice(eps[0])
	p, ch := tr.Sync()
	return errors.Join(dp.Sync(ctx, p, ch), dp.Cleanup(ctx))
}

// inFreshNetns runs fn on a locked thread inside a new network namespace,
// which is removed afterwards. Processes fn starts (nft) run there too.
func inFreshNetns(fn func() error) error {
	name := fmt.Sprintf("svcpbench-%d", os.Getpid())
	if err := makeNetns(name, netip.Prefix{}); err != nil {
		return err
	}
	defer netwire.Delete(name)
	return nsrun.Do(name, fn)
}

// makeNetns creates the namespace name with lo up and, if addr is valid,
// addr on a veth whose peer stays inside: an address the agent can serve
// on, reached from inside the namespace only.
func makeNetns(name string, addr netip.Prefix) error {
	if err := netwire.Add(name); err != nil {
		return err
	}
	ns, err := netwire.Open(name)
	if err != nil {
		return errors.Join(err, netwire.Delete(name))
	}
	defer ns.Close()
	err = ns.Up("lo")
	if addr.IsValid() {
		err = errors.Join(err, ns.AddVeth("eth0", ns, "eth1"), ns.Up("eth1"), ns.AddAddrs("eth0", addr), ns.Up("eth0"))
	}
	if err != nil {
		return errors.Join(err, netwire.Delete(name))
	}
	return nil
}

// kernelRelease is the running kernel's release, for the table's heading:
// the same dataplane is another on another kernel.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func vmHWM() uint64 {
	_, peak := procMemory("self")
	return uint64(peak) << 10
}
