package nsrun

import "net/netip"

// NthAddr returns the n-th address of p counted from its base (n small), as
// the address plans of the test networks and the lab number their hosts.
func NthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}
