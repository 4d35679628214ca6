package workload

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeDNS answers A queries for <svc>.<ns>.svc.cluster.local from
// fakeServices over UDP, NXDOMAIN for the rest, as the cluster DNS does for
// the names the frontend asks about.
type fakeDNS struct {
	addr     netip.AddrPort
	services *fakeServices
}

// startDNS serves the services on dnsIP until the test ends.
func startDNS(t *testing.T, services map[string][]netip.Addr) (*fakeDNS, *fakeServices) {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(dnsIP, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d := &fakeDNS{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), services: &fakeServices{services: services}}
	go d.serve(conn)
	return d, d.services
}

func (d *fakeDNS) serve(conn *net.UDPConn) {
	buf := make([]byte, 512)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		if answer, ok := d.answer(buf[:n]); ok {
			conn.WriteToUDPAddrPort(answer, from)
		}
	}
}

// answer builds the reply to one query.
func (d *fakeDNS) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	h.Response, h.RCode = true, dnsmessage.RCodeNameError
	var found []netip.Addr
	if svc, ns, ok := serviceOf(q.Name.String()); ok {
		if addrs, known := d.services.Lookup(ns, svc); known {
			h.RCode, found = dnsmessage.RCodeSuccess, addrs
		}
	}
	b := dnsmessage.NewBuilder(nil, h)
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	for _, a := range found {
		if a.Is4() && q.Type == dnsmessage.TypeA {
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: a.As4()})
		}
	}
	msg, err := b.Finish()
	return msg, err == nil
}

// serviceOf splits "<svc>.<ns>.svc.cluster.local.".
func serviceOf(name string) (svc, ns string, ok bool) {
	rest, ok := strings.CutSuffix(strings.ToLower(name), ".svc.cluster.local.")
	if !ok {
		return "", "", false
	}
	svc, ns, ok = strings.Cut(rest, ".")
	return svc, ns, ok && !strings.Contains(ns, ".")
}
