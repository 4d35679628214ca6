package workload

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSTTL is the TTL of every answer, in seconds: short, so that clients
// see a Service's new addresses soon, as with CoreDNS's default of 5.
const DNSTTL = 5

// zone answers DNS queries about the cluster domain from a ServiceLister.
// It knows <service>.<namespace>.svc.<domain> names only; the lab has no
// upstream, so it refuses names outside the domain.
type zone struct {
	domain   string // lower case and rooted, as "cluster.local."
	services ServiceLister
}

func newZone(domain string, services ServiceLister) zone {
	return zone{domain: strings.ToLower(strings.Trim(domain, ".")) + ".", services: services}
}

// reply is a response before packing.
type reply struct {
	header   dnsmessage.Header
	question dnsmessage.Question
	answers  []netip.Addr
}

// respond answers a packed query. An error means the query is malformed,
// or is not a query: it gets no answer.
func (z zone) respond(query []byte) (reply, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return reply{}, err
	}
	if h.Response {
		return reply{}, errors.New("a response, not a query")
	}
	questions, err := p.AllQuestions()
	if err != nil {
		return reply{}, err
	}
	if len(questions) != 1 {
		return reply{}, fmt.Errorf("%d questions, want 1", len(questions))
	}
	r := reply{
		header: dnsmessage.Header{
			ID: h.ID, Response: true, OpCode: h.OpCode,
			RecursionDesired: h.RecursionDesired, RCode: dnsmessage.RCodeNotImplemented,
		},
		question: questions[0],
	}
	if h.OpCode == 0 { // QUERY
		r.answers, r.header.RCode, r.header.Authoritative = z.answer(r.question)
	}
	return r, nil
}

// answer looks q up: its addresses of q's type, the response code and
// whether the answer is authoritative.
func (z zone) answer(q dnsmessage.Question) ([]netip.Addr, dnsmessage.RCode, bool) {
	addrs, exists, inZone := z.lookup(strings.ToLower(q.Name.String()))
	switch {
	case !inZone:
		return nil, dnsmessage.RCodeRefused, false
	case !exists:
		return nil, dnsmessage.RCodeNameError, true
	case q.Class != dnsmessage.ClassINET:
		return nil, dnsmessage.RCodeSuccess, true
	}
	return ofType(addrs, q.Type), dnsmessage.RCodeSuccess, true
}

// lookup finds a lower-case rooted name. The zone's apex and "svc." exist
// without addresses; namespaces are not tracked, so their names do not.
func (z zone) lookup(name string) (addrs []netip.Addr, exists, inZone bool) {
	if name == z.domain || name == "svc."+z.domain {
		return nil, true, true
	}
	rest, ok := strings.CutSuffix(name, ".svc."+z.domain)
	if !ok {
		return nil, false, strings.HasSuffix(name, "."+z.domain)
	}
	service, namespace, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(namespace, ".") {
		return nil, false, true
	}
	addrs, exists = z.services.Lookup(namespace, service)
	return addrs, exists, true
}

// ofType keeps the IPv4 addresses for A, the IPv6 ones for AAAA.
func ofType(addrs []netip.Addr, t dnsmessage.Type) []netip.Addr {
	var kept []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if (t == dnsmessage.TypeA && a.Is4()) || (t == dnsmessage.TypeAAAA && a.Is6()) {
			kept = append(kept, a)
		}
	}
	return kept
}

// pack encodes the reply. Over UDP (limit > 0) an answer longer than limit
// is sent truncated, without records, so that the client retries over TCP.
func (r reply) pack(limit int) ([]byte, error) {
	msg, err := r.build()
	if err != nil || limit <= 0 || len(msg) <= limit {
		return msg, err
	}
	r.header.Truncated = true
	r.answers = nil
	return r.build()
}

func (r reply) build() ([]byte, error) {
	b := dnsmessage.NewBuilder(nil, r.header)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(r.question); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range r.answers {
		if err := addRecord(&b, r.question.Name, a); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

func addRecord(b *dnsmessage.Builder, name dnsmessage.Name, a netip.Addr) error {
	h := dnsmessage.ResourceHeader{Name: name, Class: dnsmessage.ClassINET, TTL: DNSTTL}
	if a.Is4() {
		return b.AResource(h, dnsmessage.AResource{A: a.As4()})
	}
	return b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: a.As16()})
}
