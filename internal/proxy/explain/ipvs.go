package explain

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/ipvs"
)

// VirtualServer is one IPVS virtual server of a port as the node's kernel
// holds it, read over netlink: what `ipvsadm -Ln` shows of it.
type VirtualServer struct {
	Protocol           string       `json:"protocol"`
	Address            string       `json:"address"` // ip:port
	Scheduler          string       `json:"scheduler"`
	PersistenceSeconds int          `json:"persistenceSeconds,omitempty"`
	Reals              []RealServer `json:"realServers"`
}

// RealServer is a real server of a virtual server; weight 0 takes no new
// connections (a removed endpoint draining its connections).
type RealServer struct {
	Address string `json:"address"`
	Weight  int    `json:"weight"`
}

// addIPVS gives each port the virtual servers of s that are its: its
// ClusterIP, external and load-balancer IPs on its port, and any address
// on its node port, of its protocol.
func (st *Status) addIPVS(s ipvs.State) {
	for i := range st.Ports {
		p := &st.Ports[i]
		for _, vs := range s.Services {
			if vs.FWMark == 0 && strings.EqualFold(vs.Protocol.String(), p.Protocol) && p.owns(vs.Address, vs.Port) {
				p.IPVS = append(p.IPVS, virtualServerOf(vs))
			}
		}
	}
}

// owns says whether addr:port is one of the port's addresses.
func (p *Port) owns(addr netip.Addr, port uint16) bool {
	if p.NodePort != 0 && port == p.NodePort {
		return true
	}
	ips := append([]string{p.ClusterIP}, append(slices.Clone(p.ExternalIPs), p.LoadBalancerIPs...)...)
	return port == p.Port && slices.Contains(ips, addr.String())
}

func virtualServerOf(vs ipvs.VirtualServer) VirtualServer {
	out := VirtualServer{
		Protocol: vs.Protocol.String(), Address: netip.AddrPortFrom(vs.Address, vs.Port).String(),
		Scheduler: vs.Scheduler, PersistenceSeconds: int(vs.PersistenceTimeout.Seconds()), Reals: []RealServer{},
	}
	for _, rs := range vs.Reals {
		out.Reals = append(out.Reals, RealServer{Address: netip.AddrPortFrom(rs.Address, rs.Port).String(), Weight: rs.Weight})
	}
	slices.SortFunc(out.Reals, func(a, b RealServer) int { return strings.Compare(a.Address, b.Address) })
	return out
}

// writeIPVS prints a port's virtual servers, one line each.
func (p Port) writeIPVS(w io.Writer) {
	for _, vs := range p.IPVS {
		fmt.Fprintf(w, "  ipvs %s %s %s", vs.Protocol, vs.Address, vs.Scheduler)
		if vs.PersistenceSeconds != 0 {
			fmt.Fprintf(w, " persistent %ds", vs.PersistenceSeconds)
		}
		var reals []string
		for _, rs := range vs.Reals {
			r := fmt.Sprintf("%s weight %d", rs.Address, rs.Weight)
			if rs.Weight == 0 {
				r += " (draining)"
			}
			reals = append(reals, r)
		}
		if len(reals) == 0 {
			reals = []string{"no real server"}
		}
		fmt.Fprintf(w, " -> %s\n", strings.Join(reals, ", "))
	}
}
