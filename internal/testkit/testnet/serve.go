package testnet

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// Server answers on TCP and UDP with who it is and who asked: one line
// "<name> <remote ip:port>\n" per TCP connection (then it closes) and per
// UDP datagram. The remote address is as the server saw it, so tests can
// tell whether a proxy masqueraded.
type Server struct {
	name string
	tcp  []*net.TCPListener
	udp  []*net.UDPConn
	wg   sync.WaitGroup
}

// Serve starts the pod's Server on its IPv4 and IPv6 address at port and
// stops it in t.Cleanup.
func (p *Pod) Serve(t testing.TB, port uint16) {
	t.Helper()
	p.NS.Serve(t, p.Name,
		netip.AddrPortFrom(p.IPv4, port), netip.AddrPortFrom(p.IPv6, port))
}

// Serve starts a Server named name on addrs inside ns and stops it in
// t.Cleanup. Use it for host-network servers, e.g. on a node's LAN IP.
func (ns *NS) Serve(t testing.TB, name string, addrs ...netip.AddrPort) {
	t.Helper()
	s, err := ns.Listen(name, addrs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
}

// Listen opens TCP and UDP sockets on addrs inside ns and serves them
// until Close.
func (ns *NS) Listen(name string, addrs ...netip.AddrPort) (*Server, error) {
	s := &Server{name: name}
	err := ns.Do(func() error {
		for _, a := range addrs {
			if err := s.listen(a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("serve %s: %w", name, err)
	}
	for _, l := range s.tcp {
		s.wg.Go(func() { s.serveTCP(l) })
	}
	for _, c := range s.udp {
		s.wg.Go(func() { s.serveUDP(c) })
	}
	return s, nil
}

func (s *Server) listen(a netip.AddrPort) error {
	tcp, udp := "tcp4", "udp4"
	if a.Addr().Is6() {
		tcp, udp = "tcp6", "udp6"
	}
	l, err := net.ListenTCP(tcp, net.TCPAddrFromAddrPort(a))
	if err != nil {
		return err
	}
	s.tcp = append(s.tcp, l)
	c, err := net.ListenUDP(udp, net.UDPAddrFromAddrPort(a))
	if err != nil {
		return err
	}
	s.udp = append(s.udp, c)
	return nil
}

// Close stops serving and waits for the serving goroutines.
func (s *Server) Close() {
	for _, l := range s.tcp {
		l.Close()
	}
	for _, c := range s.udp {
		c.Close()
	}
	s.wg.Wait()
}

func (s *Server) line(remote netip.AddrPort) []byte {
	return fmt.Appendf(nil, "%s %s\n", s.name, netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()))
}

// serveTCP answers connections until l is closed.
func (s *Server) serveTCP(l *net.TCPListener) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			return
		}
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(s.line(remote))
		c.Close()
	}
}

// serveUDP answers datagrams until c is closed. An unconnected UDP socket
// reports no ICMP errors, so any read error means it was closed.
func (s *Server) serveUDP(c *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		_, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		c.WriteToUDPAddrPort(s.line(from), from)
	}
}
