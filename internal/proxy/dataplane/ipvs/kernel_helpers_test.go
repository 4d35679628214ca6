package ipvs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// The kernel tests' cluster (testnet): a client pod and one endpoint on
// node1, where IPVS runs, and two endpoints on node2.
var kernelPods = []testnet.PodSpec{
	{Name: "cli", Node: "node1"}, {Name: "ep1", Node: "node1"},
	{Name: "ep2", Node: "node2"}, {Name: "ep3", Node: "node2"},
}

const (
	servePort = 8080 // testnet's server: answers and closes (TCP and UDP)
	holdPort  = 9090 // holdServer: answers and keeps the connection
)

// ipvsCluster is a testnet cluster whose node1 runs IPVS. Building one
// takes most of 20 s in the VM, so the kernel tests share one.
type ipvsCluster struct {
	*testnet.Cluster
	eps []*testnet.Pod
}

// newIPVSCluster builds the cluster, starts both servers on every
// endpoint, and readies node1 for IPVS behind a NodePort: conntrack for
// IPVS connections, and, as kube-proxy does, masquerading of traffic to
// the node ports listed in the KUBE-NODE-PORT-* sets (the test's own glue;
// the dataplane will write its own).
func newIPVSCluster(t *testing.T) *ipvsCluster {
	t.Helper()
	testnet.RequireKernel(t, "ipvsadm", "ipset", "iptables")
	// testnet.New allows 30 s; under TCG every `ip` costs some 100 ms.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := testnet.Build(ctx, testnet.Options{Pods: kernelPods})
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("testnet: %v", err)
		}
	})
	ic := &ipvsCluster{Cluster: c}
	for _, name := range []string{"ep1", "ep2", "ep3"} {
		p := c.Pods[name]
		p.Serve(t, servePort)
		holdServe(t, p, holdPort)
		ic.eps = append(ic.eps, p)
	}
	for _, args := range [][]string{
		{"sysctl", "-q", "-w", "net.ipv4.vs.conntrack=1"},
		// The sets the glue matches are made here, by ipset, so that the
		// rules can name them; every State of the tests lists them.
		{"ipset", "create", "KUBE-NODE-PORT-TCP", "bitmap:port", "range", "0-65535", "comment"},
		{"ipset", "create", "KUBE-NODE-PORT-UDP", "bitmap:port", "range", "0-65535", "comment"},
		{"iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-m", "set", "--match-set", "KUBE-NODE-PORT-TCP", "dst", "-j", "MARK", "--set-xmark", "0x4000/0x4000"},
		{"iptables", "-t", "nat", "-A", "PREROUTING", "-p", "udp", "-m", "set", "--match-set", "KUBE-NODE-PORT-UDP", "dst", "-j", "MARK", "--set-xmark", "0x4000/0x4000"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "mark", "--mark", "0x4000/0x4000", "-j", "MASQUERADE"},
	} {
		if _, err := c.Node1.Exec(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	return ic
}

// kernel returns the kernel layer of node1, with opts, for one test.
func (c *ipvsCluster) kernel(t *testing.T, opts Options) *Netlink {
	opts.NetNS = "/run/netns/" + c.Node1.Name
	k := NewNetlink(opts)
	t.Cleanup(k.Close)
	return k
}

// apply applies s on node1 and fails t if it cannot.
func (c *ipvsCluster) apply(t *testing.T, k *Netlink, s State) Result {
	t.Helper()
	res, err := k.Apply(context.Background(), s)
	if err != nil {
		t.Fatalf("%v\nkernel:\n%s", err, c.ipvsadm(t))
	}
	return res
}

// ipvsadm returns `ipvsadm -Ln` run in node1.
func (c *ipvsCluster) ipvsadm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.Node1.Exec(context.Background(), append([]string{"ipvsadm", "-Ln"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// reals returns the real servers of every endpoint at port, weight 1.
func (c *ipvsCluster) reals(port uint16) []RealServer {
	var rs []RealServer
	for _, p := range c.eps {
		rs = append(rs, RealServer{Address: p.IPv4, Port: port, Weight: 1})
	}
	return rs
}

// holdServe serves TCP on the pod's IPv4 address at port: it writes the
// pod's name on every connection, again for every line it reads, and
// closes when the client does, so that a test holds a connection open as
// long as it likes and sees where it goes.
func holdServe(t *testing.T, p *testnet.Pod, port uint16) {
	t.Helper()
	l, err := nsrun.Listen(p.NS.Name, "tcp4", netip.AddrPortFrom(p.IPv4, port).String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { holdConn(c, p.Name) })
		}
	})
}

func holdConn(c net.Conn, name string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute)) // no test holds one longer
	line := []byte(name + "\n")
	if _, err := c.Write(line); err != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
		if _, err := c.Write(line); err != nil {
			return
		}
	}
}

// conn is a client connection to a holdServer.
type conn struct {
	c    *net.TCPConn
	r    *bufio.Reader
	Name string // the server that answered
}

// connect opens a TCP connection from ns to dst, from src if it is valid,
// and reads which server answered.
func connect(ns *testnet.NS, src netip.Addr, dst netip.AddrPort) (*conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
		if src.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		var err error
		c, err = d.Dial("tcp4", dst.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	cn := &conn{c: c.(*net.TCPConn), r: bufio.NewReader(c)}
	if cn.Name, err = cn.line(); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", dst, err)
	}
	return cn, nil
}

func (c *conn) line() (string, error) {
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// ping sends a line and returns who answered: the connection still works.
func (c *conn) ping() (string, error) {
	if _, err := c.c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return c.line()
}

// close ends the connection as both sides see it: it sends its FIN and
// waits for the server's, so IPVS has seen both before close returns
// and counts the connection as inactive, not active.
func (c *conn) close() error {
	defer c.c.Close()
	if err := c.c.CloseWrite(); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, c.r); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// askHold makes one short connection and returns who answered.
func askHold(ns *testnet.NS, src netip.Addr, dst netip.AddrPort) (string, error) {
	c, err := connect(ns, src, dst)
	if err != nil {
		return "", err
	}
	return c.Name, c.close()
}

// askMany makes n short connections one after another.
func askMany(t *testing.T, ns *testnet.NS, src netip.Addr, dst netip.AddrPort, n int) []string {
	t.Helper()
	var names []string
	for range n {
		name, err := askHold(ns, src, dst)
		if err != nil {
			t.Fatalf("connection %d to %s from %v: %v", len(names)+1, dst, src, err)
		}
		names = append(names, name)
	}
	return names
}

// addSources gives the client pod n more IPv4 addresses, and its node
// routes to them, for schedulers that hash the source.
func (c *ipvsCluster) addSources(t *testing.T, n int) []netip.Addr {
	t.Helper()
	cli := c.Pods["cli"]
	var srcs []netip.Addr
	ctx := context.Background()
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, 244, 1, byte(200 + i)})
		srcs = append(srcs, a)
		for _, args := range [][]string{
			{"-n", cli.NS.Name, "addr", "add", a.String() + "/32", "dev", "eth0"},
			{"-n", c.Node1.Name, "route", "add", a.String() + "/32", "dev", "v-cli"},
		} {
			if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
	}
	return srcs
}

// checkIpvsadm holds the virtual servers as `ipvsadm -Sn` saves them
// against the layer's own reading: ipvsadm parses the kernel's answer
// itself, so a value both our writing and our reading get wrong (a byte
// order, a flag) shows here.
func checkIpvsadm(t *testing.T, c *ipvsCluster, k *Netlink) {
	t.Helper()
	out, err := c.Node1.Exec(context.Background(), "ipvsadm", "-Sn")
	if err != nil {
		t.Fatal(err)
	}
	o, err := k.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	want := ipvsadmSave(o)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("ipvsadm -Sn:\n%s\nwant, from the layer's reading:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// ipvsadmSave renders virtual servers as `ipvsadm -Sn` prints them.
func ipvsadmSave(o *observed) []string {
	var lines []string
	for key, svc := range o.services {
		vs := svc.vs
		proto := map[Protocol]string{TCP: "-t", UDP: "-u", SCTP: "--sctp-service"}[key.Protocol]
		line := fmt.Sprintf("-A %s %s -s %s", proto, key.AddrPort, vs.Scheduler)
		if secs := vs.persistenceSeconds(); secs > 0 {
			line += fmt.Sprintf(" -p %d", secs)
			if m := vs.mask(); m != vs.Address.BitLen() && vs.Address.Is4() {
				line += " -M " + net.IP(net.CIDRMask(m, 32)).String()
			} else if m != vs.Address.BitLen() {
				line += fmt.Sprintf(" -M %d", m)
			}
		}
		if vs.Flags&FlagOnePacket != 0 {
			line += " -o"
		}
		if names := schedFlagNames(vs.Scheduler, vs.Flags); names != "" {
			line += " -b " + names
		}
		lines = append(lines, line)
		for ap, rs := range svc.reals {
			lines = append(lines, fmt.Sprintf("-a %s %s -r %s -m -w %d", proto, key.AddrPort, ap, rs.Weight))
		}
	}
	return lines
}

// schedFlagNames are the scheduler flags as ipvsadm names them.
func schedFlagNames(scheduler string, f Flags) string {
	names := []string{"flag-1", "flag-2", "flag-3"}
	if scheduler == "sh" || scheduler == "mh" {
		names = []string{scheduler + "-fallback", scheduler + "-port", "flag-3"}
	}
	var out []string
	for i, bit := range []Flags{FlagSched1, FlagSched2, FlagSched3} {
		if f&bit != 0 {
			out = append(out, names[i])
		}
	}
	return strings.Join(out, ",")
}
