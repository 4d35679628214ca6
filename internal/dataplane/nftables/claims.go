package nftables

import (
	"slices"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/internal/plan"
)

// elemID identifies an element of a shared map or set by its key.
type elemID struct {
	into string
	key  string
}

func idOf(e elemDef) elemID { return elemID{into: e.into, key: e.key} }

// claims records which service ports want which shared elements. Several
// ports may claim the same key: the ClusterIP of a multi-port Service in
// cluster-ips, an endpoint serving two Services in hairpin, or two Services
// that both (wrongly) claim one external IP and port. The element the table
// holds is the claim of the smallest port key, so the result depends only on
// the plan, never on the order of syncs.
type claims struct {
	byID map[elemID]claimants
}

// claimants are the ports claiming one element: nearly always one, so the
// first is kept inline; a claim points into its port's elements rather than
// copying them. (Maps and copies per element cost 90 MiB at 100,000
// endpoints.)
type claimants struct {
	first claim
	more  []claim
}

type claim struct {
	o *portObjects
	i int32 // index in o.elems
}

func (c claim) elem() elemDef { return c.o.elems[c.i] }

func newClaims() *claims { return &claims{byID: map[elemID]claimants{}} }

// update replaces the claims of old (a port's previous objects, or nil)
// with those of new (its current ones, or nil).
func (c *claims) update(old, new *portObjects) {
	if old != nil {
		for _, e := range old.elems {
			c.release(idOf(e), old.key)
		}
	}
	if new != nil {
		for i, e := range new.elems {
			c.claim(idOf(e), claim{new, int32(i)})
		}
	}
}

func (c *claims) claim(id elemID, cl claim) {
	cs, ok := c.byID[id]
	switch {
	case !ok:
		cs.first = cl
	case cs.first.o.key == cl.o.key:
		cs.first = cl
	default:
		for i := range cs.more {
			if cs.more[i].o.key == cl.o.key {
				cs.more[i] = cl
				c.byID[id] = cs
				return
			}
		}
		cs.more = append(cs.more, cl)
	}
	c.byID[id] = cs
}

func (c *claims) release(id elemID, k plan.Key) {
	cs, ok := c.byID[id]
	if !ok {
		return
	}
	if cs.first.o.key == k {
		if len(cs.more) == 0 {
			delete(c.byID, id)
			return
		}
		cs.first, cs.more = cs.more[0], cs.more[1:]
	} else {
		cs.more = slices.DeleteFunc(cs.more, func(x claim) bool { return x.o.key == k })
	}
	c.byID[id] = cs
}

// winner returns the element the table should hold for id: the claim of
// the smallest port key.
func (c *claims) winner(id elemID) (elemDef, bool) {
	cs, ok := c.byID[id]
	if !ok {
		return elemDef{}, false
	}
	best := cs.first
	for _, x := range cs.more {
		if x.o.key.Less(best.o.key) {
			best = x
		}
	}
	return best.elem(), true
}

// effective returns every element the table should hold, in two groups:
// those of the endpoint maps (inEndpointMaps says which maps), grouped by
// map for batching, and the others, sorted so that a full sync's
// transaction reads the same every time.
func (c *claims) effective(inEndpointMaps func(into string) bool) (endpoints, others []elemDef) {
	for id := range c.byID {
		e, _ := c.winner(id)
		if inEndpointMaps(id.into) {
			endpoints = append(endpoints, e)
		} else {
			others = append(others, e)
		}
	}
	slices.SortFunc(endpoints, func(a, b elemDef) int { return strings.Compare(a.into, b.into) })
	slices.SortFunc(others, func(a, b elemDef) int {
		if a.into != b.into {
			return strings.Compare(a.into, b.into)
		}
		return strings.Compare(a.key, b.key)
	})
	return endpoints, others
}

// snapshot records the current winners of ids, before an update.
func (c *claims) snapshot(ids []elemID) map[elemID]elemDef {
	out := map[elemID]elemDef{}
	for _, id := range ids {
		if e, ok := c.winner(id); ok {
			out[id] = e
		}
	}
	return out
}

// diff compares the winners of ids before (a snapshot) and now, and returns
// the elements to delete and to add. A changed value is a delete and an add.
func (c *claims) diff(before map[elemID]elemDef, ids []elemID) (dels, adds []elemDef) {
	seen := map[elemID]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		old, hadOld := before[id]
		cur, hasCur := c.winner(id)
		if hadOld && hasCur && sameElem(old, cur) {
			continue
		}
		if hadOld {
			dels = append(dels, old)
		}
		if hasCur {
			adds = append(adds, cur)
		}
	}
	return dels, adds
}

func sameElem(a, b elemDef) bool {
	return a.value == b.value && deref(a.comment) == deref(b.comment)
}

func secondsDuration(s int32) time.Duration { return time.Duration(s) * time.Second }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
