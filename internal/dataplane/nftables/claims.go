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
	byID map[elemID]*claimants
}

// claimants are the ports claiming one element. Nearly always there is one,
// so it is kept outside a map: 100,000 small maps would cost 90 MiB.
type claimants struct {
	key  plan.Key
	elem elemDef
	more map[plan.Key]elemDef // further claimants, rarely any
}

func newClaims() *claims { return &claims{byID: map[elemID]*claimants{}} }

// update replaces port k's claims old with new.
func (c *claims) update(k plan.Key, old, new []elemDef) {
	for _, e := range old {
		c.release(idOf(e), k)
	}
	for _, e := range new {
		c.claim(idOf(e), k, e)
	}
}

func (c *claims) claim(id elemID, k plan.Key, e elemDef) {
	cl := c.byID[id]
	switch {
	case cl == nil:
		c.byID[id] = &claimants{key: k, elem: e}
	case cl.key == k:
		cl.elem = e
	default:
		if cl.more == nil {
			cl.more = map[plan.Key]elemDef{}
		}
		cl.more[k] = e
	}
}

func (c *claims) release(id elemID, k plan.Key) {
	cl := c.byID[id]
	if cl == nil {
		return
	}
	if cl.key != k {
		delete(cl.more, k)
		return
	}
	if len(cl.more) == 0 {
		delete(c.byID, id)
		return
	}
	// Promote any remaining claimant; winner() picks by key order anyway.
	for mk, me := range cl.more {
		cl.key, cl.elem = mk, me
		delete(cl.more, mk)
		break
	}
}

// winner returns the element the table should hold for id.
func (c *claims) winner(id elemID) (elemDef, bool) {
	cl := c.byID[id]
	if cl == nil {
		return elemDef{}, false
	}
	best, bestKey := cl.elem, cl.key
	for k, e := range cl.more {
		if k.Less(bestKey) {
			best, bestKey = e, k
		}
	}
	return best, true
}

// effective returns every element the table should hold, sorted.
func (c *claims) effective() []elemDef {
	ids := make([]elemID, 0, len(c.byID))
	for id := range c.byID {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b elemID) int {
		if a.into != b.into {
			return strings.Compare(a.into, b.into)
		}
		return strings.Compare(a.key, b.key)
	})
	out := make([]elemDef, 0, len(ids))
	for _, id := range ids {
		e, _ := c.winner(id)
		out = append(out, e)
	}
	return out
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
