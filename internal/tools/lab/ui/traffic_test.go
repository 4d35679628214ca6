package ui

import (
	"net/netip"
	"slices"
	"testing"
)

func flow(src, endpoint string) Flow {
	return Flow{Protocol: "TCP", Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort("10.96.0.20:80"), Endpoint: netip.MustParseAddrPort(endpoint)}
}

// TestTrafficCountsNewFlows: a flow counts once, in the tick its node's
// dump first shows it; the first dump of a node is the baseline; a node
// whose table could not be read starts a new baseline.
func TestTrafficCountsNewFlows(t *testing.T) {
	tr := NewTraffic(4, 2)
	a, b := "10.244.1.3:8080", "10.244.2.3:8080"
	old := flow("10.244.1.9:40000", a)
	tr.Observe("node1", []Flow{old})
	tr.Tick()
	check := func(step, key string, wantWindow, wantTotal int, wantRecent []int) {
		t.Helper()
		w, total, recent := tr.Of("TCP " + key)
		if w != wantWindow || total != wantTotal || !slices.Equal(recent, wantRecent) {
			t.Errorf("%s: %s: window %d total %d recent %v, want %d %d %v", step, key, w, total, recent, wantWindow, wantTotal, wantRecent)
		}
	}
	check("baseline", a, 0, 0, []int{0, 0, 0, 0})

	tr.Observe("node1", []Flow{old, flow("10.244.1.9:40001", a), flow("10.244.1.9:40002", b)})
	tr.Observe("node2", []Flow{flow("198.51.100.100:5000", b)}) // node2's baseline
	tr.Tick()
	check("two new", a, 1, 1, []int{0, 0, 0, 1})
	check("two new", b, 1, 1, []int{0, 0, 0, 1})

	tr.Observe("node1", []Flow{flow("10.244.1.9:40001", a), flow("10.244.1.9:40003", a), flow("10.244.1.9:40004", a)})
	tr.Observe("node2", []Flow{flow("198.51.100.100:5000", b), flow("198.51.100.100:5001", b)})
	tr.Tick()
	check("more", a, 3, 3, []int{0, 0, 1, 2})
	check("more", b, 2, 2, []int{0, 0, 1, 1})
	if got := tr.WindowOfAddr(netip.MustParseAddr("10.244.1.3")); got != 3 {
		t.Errorf("window of 10.244.1.3: %d, want 3", got)
	}

	tr.Forget("node1") // its dump failed this tick
	tr.Tick()
	tr.Observe("node1", []Flow{flow("10.244.1.9:40005", a)}) // a new baseline
	tr.Tick()
	check("after a failed dump", a, 0, 3, []int{1, 2, 0, 0})
}

func TestAddrOfKey(t *testing.T) {
	for key, want := range map[string]string{
		"TCP 10.244.1.3:3000":       "10.244.1.3",
		"UDP [fd00:10:244:1::3]:53": "fd00:10:244:1::3",
		"nonsense":                  "",
	} {
		if got := addrOfKey(key); got != want {
			t.Errorf("addrOfKey(%q) = %q, want %q", key, got, want)
		}
	}
}
