package nftables

import (
	"net/netip"
	"testing"
)

// TestSourceHashIndex holds sourceHashIndex to indexes the kernel chose
// for real connections (TestKernelSourceHashPredicted, three endpoints,
// the renderer's seed), so that a change to jhash.go fails without root.
func TestSourceHashIndex(t *testing.T) {
	seed := parseHex(sourceHashSeed)
	for src, want := range map[string]int{
		"10.244.1.2":       1,
		"10.244.1.3":       1,
		"198.51.100.100":   1,
		"fd00:10:244:1::2": 0,
		"fd00:10:244:1::3": 0,
	} {
		if got := sourceHashIndex(netip.MustParseAddr(src), 3, seed); got != want {
			t.Errorf("jhash %s mod 3 = %d, the kernel chose %d", src, got, want)
		}
	}
}
