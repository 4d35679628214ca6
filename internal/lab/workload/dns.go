package workload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	// DNSPort is where ClusterDNS serves unless the container declares
	// ports named "dns" (UDP) and "dns-tcp" (TCP), as CoreDNS's do.
	DNSPort = 53
	// maxUDPAnswer is the classic DNS limit; longer answers go over TCP.
	maxUDPAnswer = 512
	// tcpIdleTimeout drops TCP clients that stop asking.
	tcpIdleTimeout = 10 * time.Second
)

// ClusterDNS is the cluster DNS image (registry.k8s.io/coredns/coredns). It
// serves UDP and TCP on DNSPort, answering A and AAAA queries for
// <service>.<namespace>.svc.<Env.ClusterDomain> from Env.Services with TTL
// DNSTTL, NXDOMAIN for other names in the domain, and REFUSED for names
// outside it. Malformed UDP queries are dropped; over TCP they close the
// connection. It logs errors only, since queries are frequent.
func ClusterDNS(ctx context.Context, env Env, ready func()) error {
	env = env.withDefaults()
	if env.Services == nil {
		return errors.New("cluster dns: Env.Services is nil")
	}
	z := newZone(env.ClusterDomain, env.Services)
	udpPort, tcpPort := dnsPorts(env.Ports)
	pc, err := env.ListenPacket("udp", env.address(udpPort))
	if err != nil {
		return fmt.Errorf("listen on udp port %d: %w", udpPort, err)
	}
	l, err := env.Listen("tcp", env.address(tcpPort))
	if err != nil {
		pc.Close()
		return fmt.Errorf("listen on tcp port %d: %w", tcpPort, err)
	}
	tcp := &tcpDNS{zone: z, listener: l, conns: map[net.Conn]struct{}{}}
	failed := make(chan error, 2)
	go func() { failed <- serveUDP(pc, z, env.Logf) }()
	go func() { failed <- tcp.serve() }()
	signal(ready)

	running := 2
	select {
	case <-ctx.Done():
	case err = <-failed:
		running--
	}
	pc.Close()
	tcp.stop()
	for range running {
		<-failed
	}
	tcp.wg.Wait() // only once serve has returned: it adds to wg
	return err
}

// dnsPorts picks the ports named as CoreDNS's are, or DNSPort.
func dnsPorts(ports []ContainerPort) (udp, tcp int32) {
	udp, tcp = DNSPort, DNSPort
	for _, p := range ports {
		switch {
		case p.Name == "dns" && p.Protocol == "UDP":
			udp = p.Port
		case p.Name == "dns-tcp" && (p.Protocol == "TCP" || p.Protocol == ""):
			tcp = p.Port
		}
	}
	return udp, tcp
}

// serveUDP answers queries on pc until it is closed.
func serveUDP(pc net.PacketConn, z zone, logf func(string, ...any)) error {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dns: read udp: %w", err)
		}
		answer, err := packAnswer(z, buf[:n], maxUDPAnswer)
		if err == nil {
			_, err = pc.WriteTo(answer, from)
		}
		if err != nil {
			logf("dns: udp query from %s: %v", from, err)
		}
	}
}

// packAnswer answers a packed query with a packed response.
func packAnswer(z zone, query []byte, limit int) ([]byte, error) {
	r, err := z.respond(query)
	if err != nil {
		return nil, fmt.Errorf("malformed query: %w", err)
	}
	return r.pack(limit)
}

// tcpDNS serves DNS over TCP: each message is preceded by its length in two
// bytes, and a client may send several on one connection.
type tcpDNS struct {
	zone     zone
	listener net.Listener
	wg       sync.WaitGroup

	mu      sync.Mutex
	stopped bool
	conns   map[net.Conn]struct{}
}

// serve accepts connections until the listener is closed.
func (s *tcpDNS) serve() error {
	for {
		conn, err := s.listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dns: accept tcp: %w", err)
		}
		s.wg.Go(func() { s.serveConn(conn) })
	}
}

// stop closes the listener and wakes the connections waiting for a query;
// each then closes once it has sent the answer it owes.
func (s *tcpDNS) stop() {
	s.listener.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	for conn := range s.conns {
		conn.SetReadDeadline(time.Now())
	}
}

func (s *tcpDNS) serveConn(conn net.Conn) {
	defer s.forget(conn)
	for s.awaitQuery(conn) {
		query, err := readTCPMessage(conn)
		if err != nil {
			return
		}
		answer, err := packAnswer(s.zone, query, 0)
		if err != nil {
			return
		}
		conn.SetWriteDeadline(time.Now().Add(tcpIdleTimeout))
		if writeTCPMessage(conn, answer) != nil {
			return
		}
	}
}

// awaitQuery arms conn's idle deadline, unless the server is stopping.
// Both happen under the lock, so that stop cannot slip in between.
func (s *tcpDNS) awaitQuery(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.conns[conn] = struct{}{}
	conn.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
	return true
}

func (s *tcpDNS) forget(conn net.Conn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
	conn.Close()
}

func readTCPMessage(r io.Reader) ([]byte, error) {
	var size [2]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(size[:]))
	_, err := io.ReadFull(r, msg)
	return msg, err
}

func writeTCPMessage(w io.Writer, msg []byte) error {
	if len(msg) > 0xffff {
		return fmt.Errorf("answer of %d bytes does not fit a TCP message", len(msg))
	}
	framed := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(msg)), uint16(len(msg)))
	_, err := w.Write(append(framed, msg...))
	return err
}
