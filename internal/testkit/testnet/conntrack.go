package testnet

import (
	"errors"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// UDPFlows lists ns's UDP conntrack entries of family (unix.AF_INET or
// unix.AF_INET6) that keep accepts.
func (ns *NS) UDPFlows(family netlink.InetFamily, keep func(*netlink.ConntrackFlow) bool) ([]*netlink.ConntrackFlow, error) {
	var flows []*netlink.ConntrackFlow
	var err error
	for range 3 { // a dump is interrupted when the table changes meanwhile
		err = ns.Do(func() error {
			var err error
			flows, err = netlink.ConntrackTableList(netlink.ConntrackTable, family)
			return err
		})
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(flows, func(f *netlink.ConntrackFlow) bool {
		return f.Forward.Protocol != unix.IPPROTO_UDP || !keep(f)
	}), nil
}

// OrigDst is a conntrack entry's original destination.
func OrigDst(f *netlink.ConntrackFlow) netip.AddrPort {
	a, _ := netip.AddrFromSlice(f.Forward.DstIP)
	return netip.AddrPortFrom(a.Unmap(), f.Forward.DstPort)
}

// ReplySrc is where a conntrack entry's replies come from: the endpoint a
// DNATed flow was sent to, or else its original destination.
func ReplySrc(f *netlink.ConntrackFlow) netip.AddrPort {
	a, _ := netip.AddrFromSlice(f.Reverse.SrcIP)
	return netip.AddrPortFrom(a.Unmap(), f.Reverse.SrcPort)
}

// FlowList lists conntrack entries one a line, for failure messages.
func FlowList(flows []*netlink.ConntrackFlow) string {
	var b strings.Builder
	for _, f := range flows {
		b.WriteString(f.String() + "\n")
	}
	return b.String()
}
