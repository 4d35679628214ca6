package testnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

// Reply is what a Server answered.
type Reply struct {
	// Pod is the server's name: which backend answered.
	Pod string
	// Src is the client address as the server saw it.
	Src netip.AddrPort
}

// SawAddrOf reports whether the server saw client's address, as it does
// when the flow is not masqueraded. The port is not compared: conntrack
// keeps reply tuples unique, and when a live entry already has the new
// flow's reply tuple (endpoint → client address and port: an older flow
// to another Service address, from a closed socket whose port the kernel
// gave out again), NAT gives the new flow another source port.
func (r Reply) SawAddrOf(client netip.AddrPort) bool { return r.Src.Addr() == client.Addr() }

// Ask connects from inside ns to dst over proto ("tcp" or "udp") and
// returns the server's reply, waiting at most timeout. Use IsRefused,
// IsUnreachable and IsTimeout to tell failures apart.
func (ns *NS) Ask(ctx context.Context, proto string, dst netip.AddrPort, timeout time.Duration) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch proto {
	case "tcp":
		return ns.askTCP(ctx, dst)
	case "udp":
		c, err := ns.UDPConn(ctx, dst)
		if err != nil {
			return Reply{}, err
		}
		defer c.Close()
		deadline, _ := ctx.Deadline()
		return c.ask(deadline)
	}
	return Reply{}, fmt.Errorf("ask %s: unknown protocol %q", dst, proto)
}

// dial opens a socket inside ns: the socket stays in ns, whatever thread
// later uses it.
func (ns *NS) dial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, dst.String())
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", network, dst, err)
	}
	return conn, nil
}

func (ns *NS) askTCP(ctx context.Context, dst netip.AddrPort) (Reply, error) {
	conn, err := ns.dial(ctx, "tcp", dst)
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	r, err := readReply(conn)
	if err != nil {
		return Reply{}, fmt.Errorf("tcp %s from %s: %w", dst, ns.Name, err)
	}
	return r, nil
}

// UDPClient is a connected UDP socket: every Ask leaves from the same
// source address and port, so they all belong to one conntrack entry.
type UDPClient struct {
	conn *net.UDPConn
	dst  netip.AddrPort
	from string // namespace name, for errors
}

// UDPConn opens a UDP socket inside ns connected to dst.
func (ns *NS) UDPConn(ctx context.Context, dst netip.AddrPort) (*UDPClient, error) {
	conn, err := ns.dial(ctx, "udp", dst)
	if err != nil {
		return nil, err
	}
	return &UDPClient{conn: conn.(*net.UDPConn), dst: dst, from: ns.Name}, nil
}

// LocalAddr is the client's source address and port.
func (c *UDPClient) LocalAddr() netip.AddrPort {
	return c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Ask sends one datagram and waits at most timeout for the reply.
// Replies that arrived late for an earlier Ask are dropped first.
func (c *UDPClient) Ask(timeout time.Duration) (Reply, error) {
	return c.ask(time.Now().Add(timeout))
}

func (c *UDPClient) ask(deadline time.Time) (Reply, error) {
	r, err := c.exchange(deadline)
	if err != nil {
		return Reply{}, fmt.Errorf("udp %s from %s: %w", c.dst, c.from, err)
	}
	return r, nil
}

func (c *UDPClient) exchange(deadline time.Time) (Reply, error) {
	// Clear the last Ask's deadline first: once past, it would fail the
	// raw read of drain at once.
	c.conn.SetDeadline(time.Time{})
	if err := c.drain(); err != nil {
		return Reply{}, fmt.Errorf("drain: %w", err)
	}
	c.conn.SetDeadline(deadline)
	if _, err := c.conn.Write([]byte("?\n")); err != nil {
		return Reply{}, err
	}
	buf := make([]byte, 512)
	n, err := c.conn.Read(buf)
	if err != nil {
		return Reply{}, err
	}
	return parseReply(string(buf[:n]))
}

// drain discards queued datagrams and pending errors without blocking.
func (c *UDPClient) drain() error {
	raw, err := c.conn.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, 512)
	return raw.Read(func(fd uintptr) bool {
		for range 64 {
			_, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			if errors.Is(err, syscall.EAGAIN) {
				break
			}
		}
		return true
	})
}

// Close closes the socket.
func (c *UDPClient) Close() error { return c.conn.Close() }

func readReply(r io.Reader) (Reply, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 512)).ReadString('\n')
	if err != nil {
		return Reply{}, fmt.Errorf("read reply: %w", err)
	}
	return parseReply(line)
}

// parseReply parses "<name> <ip:port>\n".
func parseReply(line string) (Reply, error) {
	name, src, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	if !ok {
		return Reply{}, fmt.Errorf("bad reply %q", line)
	}
	ap, err := netip.ParseAddrPort(src)
	if err != nil {
		return Reply{}, fmt.Errorf("bad reply %q: %w", line, err)
	}
	return Reply{Pod: name, Src: ap}, nil
}

// IsRefused reports whether err is a refusal: a TCP reset or an ICMP
// port unreachable (ECONNREFUSED), as a REJECT rule sends by default.
func IsRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// IsUnreachable reports whether err is a host or network unreachable,
// e.g. no route, or an ICMP host/net unreachable or admin-prohibited.
func IsUnreachable(err error) bool {
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// IsTimeout reports whether err is a timeout: nothing answered, as when a
// rule drops the packet.
func IsTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.ETIMEDOUT) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
