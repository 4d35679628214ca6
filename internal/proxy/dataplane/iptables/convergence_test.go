package iptables

import (
	"context"
	"math/rand"
	"slices"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
)

// dumpOf is the canonical dump of both families of a fake kernel.
func dumpOf(f *Fake) string {
	return CanonicalSave(f.Dump(plan.IPv4)) + "\n--- ip6tables\n" + CanonicalSave(f.Dump(plan.IPv6))
}

// TestConvergence applies a random sequence of changes to the flow fixture
// (Services deleted and restored, endpoints removed and restored) with
// partial syncs; after each, the fake kernel must hold exactly what one full
// sync of the same plan gives.
func TestConvergence(t *testing.T) {
	in := flows.FixtureFor(Capabilities)
	for seed := int64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewSource(seed))
		tr := fixtureTracker(in)
		fake := NewFake()
		d := New(Options{Kernel: fake})
		ctx := context.Background()
		for step := 0; step < 30; step++ {
			p, ch := tr.Sync()
			if step > 0 && ch.Full {
				t.Fatalf("seed %d step %d: tracker asked for a full sync", seed, step)
			}
			if err := d.Sync(ctx, p, ch); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			want := NewFake()
			if err := New(Options{Kernel: want}).Sync(ctx, p, plan.Changes{Full: true}); err != nil {
				t.Fatal(err)
			}
			if got, w := dumpOf(fake), dumpOf(want); got != w {
				t.Fatalf("seed %d step %d: partial syncs diverged from a full sync:\n%s", seed, step, lineDiff(got, w))
			}
			switch rng.Intn(4) {
			case 0:
				s := in.Services[rng.Intn(len(in.Services))]
				tr.DeleteService(s.Namespace, s.Name)
			case 1:
				tr.SetService(in.Services[rng.Intn(len(in.Services))])
			case 2:
				sl := in.Slices[rng.Intn(len(in.Slices))].DeepCopy()
				if n := len(sl.Endpoints); n > 0 {
					sl.Endpoints = sl.Endpoints[:rng.Intn(n)]
				}
				tr.SetSlice(sl)
			default:
				tr.SetSlice(in.Slices[rng.Intn(len(in.Slices))])
			}
		}
	}
}

// TestPartialSyncWritesOnlyTheChangedService: after one endpoint of one
// Service changes, the restore input declares only chains of that Service,
// no dispatch chain (its dispatch rules did not change), and no chain of
// any other Service.
func TestPartialSyncWritesOnlyTheChangedService(t *testing.T) {
	in := flows.FixtureFor(Capabilities)
	tr := fixtureTracker(in)
	fake := NewFake()
	d := New(Options{Kernel: fake})
	p, ch := tr.Sync()
	if err := d.Sync(context.Background(), p, ch); err != nil {
		t.Fatal(err)
	}
	var changed = in.Slices[0].DeepCopy()
	for _, sl := range in.Slices {
		if len(sl.Endpoints) >= 3 { // still endpoints, local and remote, after the change
			changed = sl.DeepCopy()
			break
		}
	}
	changed.Endpoints = changed.Endpoints[:len(changed.Endpoints)-1]
	tr.SetSlice(changed)
	p, ch = tr.Sync()
	if ch.Full || len(ch.Keys) == 0 {
		t.Fatalf("want a partial change, got %+v", ch)
	}
	if err := d.Sync(context.Background(), p, ch); err != nil {
		t.Fatal(err)
	}
	owner := changed.Labels["kubernetes.io/service-name"]
	tx := fake.Last(plan.IPv4)
	for _, name := range declared(tx) {
		if fixedChains[name] {
			t.Errorf("partial sync for an endpoint change declared (so rewrote) %s", name)
			continue
		}
		for _, sp := range p.PortsOf(plan.IPv4) {
			if sp.Name != owner && strings.HasSuffix(name, portChain(prefixSVC, sp.Key)[len(prefixSVC):]) {
				t.Errorf("partial sync for %s declared %s of %s", owner, name, sp.Key)
			}
		}
	}
	for _, tc := range tx.Tables() {
		if len(tc.Insert)+len(tc.Delete) > 0 {
			t.Errorf("partial sync for an endpoint change edited rules in the dispatch or built-in chains:\n%s", tx)
		}
	}
}

// TestPartialSyncEditsDispatchRules: deleting a Service and adding it back
// edits the dispatch chains rule by rule (-D, then -I at the rule's place)
// instead of rewriting them, and the result equals a full sync's.
func TestPartialSyncEditsDispatchRules(t *testing.T) {
	in := flows.FixtureFor(Capabilities)
	tr := fixtureTracker(in)
	fake := NewFake()
	d := New(Options{Kernel: fake})
	ctx := context.Background()
	p, ch := tr.Sync()
	if err := d.Sync(ctx, p, ch); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"np-cluster", "lb-ranges", "multi", "dual"} {
		var svc = in.Services[0]
		for _, s := range in.Services {
			if s.Name == name {
				svc = s
			}
		}
		for _, step := range []string{"delete", "add"} {
			if step == "delete" {
				tr.DeleteService(svc.Namespace, svc.Name)
			} else {
				tr.SetService(svc)
			}
			p, ch = tr.Sync()
			if err := d.Sync(ctx, p, ch); err != nil {
				t.Fatalf("%s %s: %v", step, name, err)
			}
			tx := fake.Last(plan.IPv4)
			for _, dc := range dispatchChains {
				if slices.Contains(declared(tx), dc.chain) {
					t.Errorf("%s %s: partial sync rewrote %s %s:\n%s", step, name, dc.table, dc.chain, tx)
				}
			}
			if !editsServices(tx, step) {
				t.Errorf("%s %s: no %s in nat KUBE-SERVICES:\n%s", step, name, step, tx)
			}
			want := NewFake()
			if err := New(Options{Kernel: want}).Sync(ctx, p, plan.Changes{Full: true}); err != nil {
				t.Fatal(err)
			}
			if got, w := dumpOf(fake), dumpOf(want); got != w {
				t.Fatalf("%s %s: partial sync differs from a full sync:\n%s", step, name, lineDiff(got, w))
			}
		}
	}
}

// declared lists the chains a transaction declares, in any table.
func declared(tx *Transaction) []string {
	var out []string
	for _, tc := range tx.Tables() {
		out = append(out, tc.Declare...)
	}
	return out
}

// editsServices reports whether tx deletes ("delete") or inserts ("add")
// a rule of nat KUBE-SERVICES.
func editsServices(tx *Transaction, step string) bool {
	for _, tc := range tx.Tables() {
		rules := tc.Insert
		if step == "delete" {
			rules = tc.Delete
		}
		if tc.Table == "nat" && slices.ContainsFunc(rules, func(r Rule) bool { return r.Chain == chainServices }) {
			return true
		}
	}
	return false
}

// lineDiff lists the lines only one of a and b has.
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out strings.Builder
	for l, n := range count {
		switch {
		case n > 0:
			out.WriteString("- " + l + "\n")
		case n < 0:
			out.WriteString("+ " + l + "\n")
		}
	}
	if out.Len() == 0 {
		return "(same lines, different order)\n"
	}
	return out.String()
}

// fixtureTracker is a tracker holding every object of in.
func fixtureTracker(in plan.Input) *plan.Tracker {
	tr := plan.NewTracker(in.Config)
	tr.SetNode(in.Node)
	for _, s := range in.Slices {
		tr.SetSlice(s)
	}
	for _, s := range in.Services {
		tr.SetService(s)
	}
	return tr
}
