package workload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsPortsForTest declares ports as CoreDNS's manifest does, but 0 so that
// the kernel picks free ones.
var dnsPortsForTest = []ContainerPort{
	{Name: "dns", Port: 0, Protocol: "UDP"},
	{Name: "dns-tcp", Port: 0, Protocol: "TCP"},
	{Name: "metrics", Port: 9153, Protocol: "TCP"}, // must not be opened
}

func startDNS(t *testing.T, services map[string][]netip.Addr) (*running, *fakeServices) {
	t.Helper()
	fake := &fakeServices{services: services}
	r := start(t, ClusterDNS, Env{
		Pod: "coredns-1", Namespace: "kube-system", Bind: dnsIP,
		Ports: dnsPortsForTest, Services: fake,
	})
	if len(r.udp) != 1 || len(r.tcp) != 1 {
		t.Fatalf("listening on udp %v and tcp %v, want one socket each", r.udp, r.tcp)
	}
	return r, fake
}

func query(t *testing.T, id uint16, name string, qtype dnsmessage.Type, rd bool) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: rd})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET})
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// exchangeUDP sends msg and returns the answer, or an error on timeout.
func exchangeUDP(server netip.AddrPort, msg []byte, wait time.Duration) (dnsmessage.Message, error) {
	var m dnsmessage.Message
	conn, err := net.Dial("udp", server.String())
	if err != nil {
		return m, err
	}
	defer conn.Close()
	if _, err := conn.Write(msg); err != nil {
		return m, err
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		return m, err
	}
	return m, m.Unpack(buf[:n])
}

// answered lists the addresses in m's answers, failing on other records or
// on a TTL other than DNSTTL.
func answered(t *testing.T, m dnsmessage.Message) []netip.Addr {
	t.Helper()
	var got []netip.Addr
	for _, rr := range m.Answers {
		if rr.Header.TTL != DNSTTL {
			t.Errorf("TTL %d, want %d", rr.Header.TTL, DNSTTL)
		}
		if rr.Header.Name != m.Questions[0].Name {
			t.Errorf("answer for %s, question was %s", rr.Header.Name, m.Questions[0].Name)
		}
		switch body := rr.Body.(type) {
		case *dnsmessage.AResource:
			got = append(got, netip.AddrFrom4(body.A))
		case *dnsmessage.AAAAResource:
			got = append(got, netip.AddrFrom16(body.AAAA))
		default:
			t.Errorf("unexpected record %v", rr)
		}
	}
	return got
}

var lab = map[string][]netip.Addr{
	"default/backend-service": addrs("10.96.5.81"),
	"default/dual":            addrs("10.96.0.20", "fd00:10:96::20"),
	"default/headless":        nil, // a headless Service without ready endpoints
	"jobs/backend-service":    addrs("10.96.7.7"),
}

func TestDNSAnswersOverUDP(t *testing.T) {
	dns, _ := startDNS(t, lab)
	for _, tc := range []struct {
		name  string
		qtype dnsmessage.Type
		rd    bool
		rcode dnsmessage.RCode
		auth  bool
		want  []netip.Addr
	}{
		{"backend-service.default.svc.cluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeSuccess, true, addrs("10.96.5.81")},
		{"backend-service.jobs.svc.cluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeSuccess, true, addrs("10.96.7.7")},
		{"dual.default.svc.cluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeSuccess, true, addrs("10.96.0.20")},
		{"dual.default.svc.cluster.local.", dnsmessage.TypeAAAA, false, dnsmessage.RCodeSuccess, true, addrs("fd00:10:96::20")},
		// A name that exists without an address of the type: no answers.
		{"backend-service.default.svc.cluster.local.", dnsmessage.TypeAAAA, true, dnsmessage.RCodeSuccess, true, nil},
		{"backend-service.default.svc.cluster.local.", dnsmessage.TypeTXT, true, dnsmessage.RCodeSuccess, true, nil},
		{"headless.default.svc.cluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeSuccess, true, nil},
		{"BACKEND-Service.Default.SVC.Cluster.Local.", dnsmessage.TypeA, true, dnsmessage.RCodeSuccess, true, addrs("10.96.5.81")},
		{"cluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeSuccess, true, nil},
		{"missing.default.svc.cluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeNameError, true, nil},
		{"backend-service.nowhere.svc.cluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeNameError, true, nil},
		{"www.backend-service.default.svc.cluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeNameError, true, nil},
		{"backend-service.default.cluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeNameError, true, nil},
		{"example.com.", dnsmessage.TypeA, true, dnsmessage.RCodeRefused, false, nil},
		{"backend-service.default.svc.notcluster.local.", dnsmessage.TypeA, true, dnsmessage.RCodeRefused, false, nil},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.name, tc.qtype), func(t *testing.T) {
			m, err := exchangeUDP(dns.udp[0], query(t, 4242, tc.name, tc.qtype, tc.rd), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			h := m.Header
			if h.ID != 4242 || !h.Response || h.RecursionAvailable || h.RecursionDesired != tc.rd || h.Truncated {
				t.Errorf("header %+v: want id 4242, QR, RD %v, no RA, not truncated", h, tc.rd)
			}
			if h.RCode != tc.rcode || h.Authoritative != tc.auth {
				t.Errorf("rcode %v authoritative %v, want %v %v", h.RCode, h.Authoritative, tc.rcode, tc.auth)
			}
			if len(m.Questions) != 1 || m.Questions[0].Name.String() != tc.name {
				t.Errorf("questions %v, want the one asked", m.Questions)
			}
			if got := answered(t, m); !slices.Equal(got, tc.want) {
				t.Errorf("answers %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDNSIgnoresMalformedUDP(t *testing.T) {
	dns, _ := startDNS(t, lab)
	good := query(t, 7, "backend-service.default.svc.cluster.local.", dnsmessage.TypeA, true)
	response := slices.Clone(good)
	response[2] |= 0x80 // QR: a response must not be answered
	for name, packet := range map[string][]byte{
		"garbage":       []byte("\x00\x01garbage"),
		"header only":   good[:12],
		"cut question":  good[:len(good)-3],
		"a response":    response,
		"two questions": twoQuestions(t),
		"empty":         {},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := exchangeUDP(dns.udp[0], packet, 300*time.Millisecond)
			if !isTimeout(err) {
				t.Errorf("got %v, want no answer", err)
			}
		})
	}
	m, err := exchangeUDP(dns.udp[0], good, 2*time.Second)
	if err != nil {
		t.Fatalf("a good query after malformed ones: %v", err)
	}
	if got := answered(t, m); !slices.Equal(got, addrs("10.96.5.81")) {
		t.Errorf("answers %v after malformed queries", got)
	}
}

func twoQuestions(t *testing.T) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 9})
	b.StartQuestions()
	for _, name := range []string{"a.default.svc.cluster.local.", "b.default.svc.cluster.local."} {
		b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestDNSOverTCP(t *testing.T) {
	dns, _ := startDNS(t, lab)
	conn, err := net.Dial("tcp", dns.tcp[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// Several queries on one connection, each with its length prefix.
	for _, q := range []struct {
		name string
		want []netip.Addr
	}{
		{"backend-service.default.svc.cluster.local.", addrs("10.96.5.81")},
		{"backend-service.jobs.svc.cluster.local.", addrs("10.96.7.7")},
	} {
		m := exchangeTCP(t, conn, query(t, 11, q.name, dnsmessage.TypeA, true))
		if got := answered(t, m); m.Header.ID != 11 || !slices.Equal(got, q.want) {
			t.Errorf("%s: id %d answers %v, want 11 %v", q.name, m.Header.ID, got, q.want)
		}
	}
	// A malformed message closes the connection.
	if err := writeTCPMessage(conn, []byte("\x00\x01garbage")); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("after a malformed query: read %v, want EOF", err)
	}
}

func exchangeTCP(t *testing.T, conn net.Conn, msg []byte) dnsmessage.Message {
	t.Helper()
	framed := binary.BigEndian.AppendUint16(nil, uint16(len(msg)))
	if _, err := conn.Write(append(framed, msg...)); err != nil {
		t.Fatal(err)
	}
	answer, err := readTCPMessage(conn)
	if err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(answer); err != nil {
		t.Fatal(err)
	}
	return m
}

// Forty addresses do not fit 512 bytes: UDP says so, TCP has them all.
func TestDNSTruncatesLongUDPAnswers(t *testing.T) {
	var many []netip.Addr
	for i := range 40 {
		many = append(many, netip.AddrFrom4([4]byte{10, 244, 1, byte(i + 1)}))
	}
	dns, _ := startDNS(t, map[string][]netip.Addr{"default/big": many})
	q := query(t, 5, "big.default.svc.cluster.local.", dnsmessage.TypeA, true)

	m, err := exchangeUDP(dns.udp[0], q, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Header.Truncated || len(m.Answers) != 0 {
		t.Errorf("udp: truncated %v with %d answers, want truncated and none", m.Header.Truncated, len(m.Answers))
	}
	conn, err := net.Dial("tcp", dns.tcp[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if got := answered(t, exchangeTCP(t, conn, q)); !slices.Equal(got, many) {
		t.Errorf("tcp: %d answers, want %d", len(got), len(many))
	}
}

// An idle TCP client must not hold up the end of the program.
func TestDNSStopsPromptlyWithIdleClient(t *testing.T) {
	dns, _ := startDNS(t, lab)
	conn, err := net.Dial("tcp", dns.tcp[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	exchangeTCP(t, conn, query(t, 1, "dual.default.svc.cluster.local.", dnsmessage.TypeA, true))

	began := time.Now()
	if err := dns.stop(); err != nil {
		t.Fatalf("ClusterDNS returned %v, want nil", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("stopping took %v with an idle client", took)
	}
	if _, err := net.Dial("tcp", dns.tcp[0].String()); err == nil {
		t.Error("tcp socket still open after the program returned")
	}
}

func TestDNSNeedsServices(t *testing.T) {
	err := ClusterDNS(t.Context(), Env{Bind: dnsIP, Ports: dnsPortsForTest}, nil)
	if err == nil {
		t.Fatal("ClusterDNS ran without a ServiceLister")
	}
}

func TestDNSPorts(t *testing.T) {
	for _, tc := range []struct {
		ports    []ContainerPort
		udp, tcp int32
	}{
		{nil, 53, 53},
		{[]ContainerPort{{Name: "dns", Port: 1053, Protocol: "UDP"}, {Name: "dns-tcp", Port: 1054, Protocol: "TCP"}}, 1053, 1054},
		{[]ContainerPort{{Name: "dns", Port: 1053, Protocol: "TCP"}}, 53, 53}, // "dns" is the UDP one
		{[]ContainerPort{{Name: "metrics", Port: 9153}}, 53, 53},
	} {
		if udp, tcp := dnsPorts(tc.ports); udp != tc.udp || tcp != tc.tcp {
			t.Errorf("dnsPorts(%v) = %d, %d, want %d, %d", tc.ports, udp, tcp, tc.udp, tc.tcp)
		}
	}
}
