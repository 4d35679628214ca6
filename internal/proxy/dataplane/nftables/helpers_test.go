package nftables

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// fakeDataplane is a dataplane writing into knftables fakes, one per family.
type fakeDataplane struct {
	*Dataplane
	fakes map[plan.Family]*knftables.Fake
}

func newFakeDataplane() *fakeDataplane {
	fd := &fakeDataplane{fakes: map[plan.Family]*knftables.Fake{}}
	fd.Dataplane = New(Options{NewInterface: func(f knftables.Family, table string) (knftables.Interface, error) {
		fake := knftables.NewFake(f, table)
		if f == knftables.IPv6Family {
			fd.fakes[plan.IPv6] = fake
		} else {
			fd.fakes[plan.IPv4] = fake
		}
		return fake, nil
	}})
	return fd
}

func (fd *fakeDataplane) mustSync(t testing.TB, p *plan.Plan, ch plan.Changes) {
	t.Helper()
	if err := fd.Sync(context.Background(), p, ch); err != nil {
		t.Fatalf("sync: %v", err)
	}
	for _, fake := range fd.fakes {
		if err := danglingRefs(fake); err != nil {
			t.Fatal(err)
		}
	}
}

// danglingRefs fails when a rule or element refers to a chain, set or map
// that does not exist. The fake checks references when they are added; the
// kernel also refuses to delete what is still referenced, which the fake
// does not, so this closes the gap.
func danglingRefs(fake *knftables.Fake) error {
	rs := RulesetFromFake(fake)
	exists := func(name string) bool {
		_, c := rs.Chains[name]
		_, s := rs.Sets[name]
		_, m := rs.Maps[name]
		return c || s || m
	}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			words := strings.Fields(r)
			for i, w := range words {
				name := ""
				if strings.HasPrefix(w, "@") {
					name = w[1:]
				} else if (w == "goto" || w == "jump") && i+1 < len(words) {
					name = words[i+1]
				}
				if name != "" && !exists(name) {
					return fmt.Errorf("chain %s: rule %q refers to missing %q", c.Name, r, name)
				}
			}
		}
	}
	for m, elems := range rs.Maps {
		for k, v := range elems {
			if verb, name, _ := strings.Cut(v, " "); (verb == "goto" || verb == "jump") && !exists(name) {
				return fmt.Errorf("map %s: element %s refers to missing chain %q", m, k, name)
			}
		}
	}
	return nil
}

// dump prints both families' tables. Elements are sorted: the fake keeps
// them in insertion order, which differs between a partial and a full sync
// although the kernel's sets hold the same contents.
func (fd *fakeDataplane) dump() string {
	var b strings.Builder
	for _, f := range plan.Families {
		fake := fd.fakes[f]
		if fake == nil {
			continue
		}
		var elems []string
		for _, line := range strings.Split(fake.Dump(), "\n") {
			if strings.HasPrefix(line, "add element ") {
				elems = append(elems, line)
			} else if line != "" {
				b.WriteString(line + "\n")
			}
		}
		slices.Sort(elems)
		for _, e := range elems {
			b.WriteString(e + "\n")
		}
	}
	return b.String()
}

// fullSyncDump renders a plan from scratch with one full sync.
func fullSyncDump(t testing.TB, p *plan.Plan) string {
	fd := newFakeDataplane()
	fd.mustSync(t, p, plan.Changes{Full: true})
	return fd.dump()
}

func splitLines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

func containsWord(line, word string) bool { return strings.Contains(line, word) }

var genSuffix = regexp.MustCompile(`-g[01]\b`)

// sameGeneration renames both generations of the endpoint maps alike: a
// table that went through several full syncs may use the other one.
func sameGeneration(dump string) string { return genSuffix.ReplaceAllString(dump, "-gN") }
