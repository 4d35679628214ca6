package nftables

import (
	"slices"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
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
	byID map[string]map[string]claimants // map or set name -> element key -> claimants
}

// claimants are the ports claiming one element: nearly always one, so the
// first is kept inline; a claim points into its port's elements rather than
// copying them. (Maps and copies per element cost 90 MiB at 100,000
// endpoints.)
type claimants struct {
	first claim
	more  *[]claim // nil but for conflicts; a pointer keeps the map slot small
}

type claim struct {
	o *portObjects
	i int32 // index in o.elems
}

func (c claim) elem() elemDef { return c.o.elems[c.i] }

func newClaims() *claims { return &claims{byID: map[string]map[string]claimants{}} }

func (c *claims) get(id elemID) (claimants, bool) {
	cs, ok := c.byID[id.into][id.key]
	return cs, ok
}

func (c *claims) set(id elemID, cs claimants) {
	m := c.byID[id.into]
	if m == nil {
		m = map[string]claimants{}
		c.byID[id.into] = m
	}
	m[id.key] = cs
}

func (c *claims) remove(id elemID) { delete(c.byID[id.into], id.key) }

func (cs claimants) others() []claim {
	if cs.more == nil {
		return nil
	}
	return *cs.more
}

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
	cs, ok := c.get(id)
	if !ok || cs.first.o.key == cl.o.key {
		cs.first = cl
		c.set(id, cs)
		return
	}
	more := cs.others()
	for i := range more {
		if more[i].o.key == cl.o.key {
			more[i] = cl
			return
		}
	}
	more = append(more, cl)
	cs.more = &more
	c.set(id, cs)
}

func (c *claims) release(id elemID, k plan.Key) {
	cs, ok := c.get(id)
	if !ok {
		return
	}
	more := cs.others()
	switch {
	case cs.first.o.key == k && len(more) == 0:
		c.remove(id)
		return
	case cs.first.o.key == k:
		cs.first, more = more[0], more[1:]
	default:
		more = slices.DeleteFunc(more, func(x claim) bool { return x.o.key == k })
	}
	cs.more = nil
	if len(more) > 0 {
		cs.more = &more
	}
	c.set(id, cs)
}

// winner returns the element the table should hold for id: the claim of
// the smallest port key.
func (c *claims) winner(id elemID) (elemDef, bool) {
	cs, ok := c.get(id)
	if !ok {
		return elemDef{}, false
	}
	best := cs.first
	for _, x := range cs.others() {
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
	for into, m := range c.byID {
		for key := range m {
			e, _ := c.winner(elemID{into, key})
			if inEndpointMaps(into) {
				endpoints = append(endpoints, e)
			} else {
				others = append(others, e)
			}
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

// expandChanges turns group-level deletions and additions into element
// ones. A group that changed is compared index by index, so replacing one
// endpoint of ten deletes and adds one element, not ten.
func expandChanges(dels, adds []elemDef) (edels, eadds []elemDef) {
	added := map[elemID]elemDef{}
	for _, e := range adds {
		if e.group != nil {
			added[idOf(e)] = e
		}
	}
	for _, d := range dels {
		a, replaced := added[idOf(d)]
		if d.group == nil || !replaced {
			edels = append(edels, d.expand()...)
			continue
		}
		for i := range max(len(d.group), len(a.group)) {
			switch {
			case i >= len(a.group):
				edels = append(edels, d.member(i))
			case i >= len(d.group):
				eadds = append(eadds, a.member(i))
			case d.group[i] != a.group[i]:
				edels, eadds = append(edels, d.member(i)), append(eadds, a.member(i))
			}
		}
		delete(added, idOf(d))
	}
	for _, e := range adds {
		if _, pending := added[idOf(e)]; e.group == nil || pending {
			eadds = append(eadds, e.expand()...)
		}
	}
	return edels, eadds
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
	return a.value == b.value && deref(a.comment) == deref(b.comment) && slices.Equal(a.group, b.group)
}

func secondsDuration(s int32) time.Duration { return time.Duration(s) * time.Second }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
