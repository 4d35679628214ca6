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

func idOf(e elemDef) elemID { return elemID{into: e.into, key: strings.Join(e.key, " . ")} }

// claims records which service ports want which shared elements. Several
// ports may claim the same key: the ClusterIP of a multi-port Service in
// cluster-ips, an endpoint serving two Services in hairpin, or two Services
// that both (wrongly) claim one external IP and port. The element the table
// holds is the claim of the smallest port key, so the result depends only on
// the plan, never on the order of syncs.
type claims struct {
	byID map[elemID]map[plan.Key]elemDef
}

func newClaims() *claims { return &claims{byID: map[elemID]map[plan.Key]elemDef{}} }

// update replaces port k's claims old with new.
func (c *claims) update(k plan.Key, old, new []elemDef) {
	for _, e := range old {
		id := idOf(e)
		delete(c.byID[id], k)
		if len(c.byID[id]) == 0 {
			delete(c.byID, id)
		}
	}
	for _, e := range new {
		id := idOf(e)
		if c.byID[id] == nil {
			c.byID[id] = map[plan.Key]elemDef{}
		}
		c.byID[id][k] = e
	}
}

// winner returns the element the table should hold for id.
func (c *claims) winner(id elemID) (elemDef, bool) {
	var best elemDef
	var bestKey plan.Key
	found := false
	for k, e := range c.byID[id] {
		if !found || k.Less(bestKey) {
			best, bestKey, found = e, k, true
		}
	}
	return best, found
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
	return slices.Equal(a.value, b.value) && deref(a.comment) == deref(b.comment)
}

func secondsDuration(s int32) time.Duration { return time.Duration(s) * time.Second }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
