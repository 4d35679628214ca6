package workload

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// Loopback addresses of the tests: Linux routes all of 127.0.0.0/8 to lo,
// so each program gets its own address without any setup.
var (
	dnsIP      = netip.MustParseAddr("127.0.0.2")
	backendIP  = netip.MustParseAddr("127.0.0.3")
	frontendIP = netip.MustParseAddr("127.0.0.4")
	slowIP     = netip.MustParseAddr("127.0.0.5")
)

// running is a program a test started.
type running struct {
	tcp, udp []netip.AddrPort // where it listens, in the order it opened them
	log      *logLines
	stop     func() error // cancels its context and returns its result
}

// start runs program until the test ends, returning once it is ready. Its
// sockets are opened in the test's network namespace and recorded.
func start(t *testing.T, program Program, env Env) *running {
	t.Helper()
	r := &running{log: &logLines{t: t}}
	env.Listen = func(network, address string) (net.Listener, error) {
		l, err := net.Listen(network, address)
		if err == nil {
			r.tcp = append(r.tcp, l.Addr().(*net.TCPAddr).AddrPort())
		}
		return l, err
	}
	env.ListenPacket = func(network, address string) (net.PacketConn, error) {
		pc, err := net.ListenPacket(network, address)
		if err == nil {
			r.udp = append(r.udp, pc.LocalAddr().(*net.UDPAddr).AddrPort())
		}
		return pc, err
	}
	env.Logf = r.log.logf
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- program(ctx, env, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("program returned before it was ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("program not ready after 20s")
	}
	r.stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(ShutdownTimeout + 2*time.Second):
			return fmt.Errorf("program still running %v after cancel", ShutdownTimeout+2*time.Second)
		}
	})
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return r
}

// logLines keeps what a program logged.
type logLines struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	l.t.Log(line)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// fakeServices is a ServiceLister over a map from "namespace/name", which
// records the lookups it answers.
type fakeServices struct {
	services map[string][]netip.Addr
	mu       sync.Mutex
	asked    []string
}

func (f *fakeServices) Lookup(namespace, name string) ([]netip.Addr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, namespace+"/"+name)
	addrs, ok := f.services[namespace+"/"+name]
	return addrs, ok
}

func (f *fakeServices) lookups() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

// freePort returns a TCP port on ip that nothing listens on (any more).
func freePort(t *testing.T, ip netip.Addr) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).AddrPort().Port()
}
