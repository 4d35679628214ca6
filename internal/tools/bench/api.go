package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/internal/addrplan"
	"github.com/svcproxy/svcproxy/internal/netwire"
	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/supervise"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane"
)

// nodeIP is the agent's node address, in its namespace; metricsURL is
// where it serves its metrics there.
var (
	nodeIP     = addrplan.NodeN(1).LANv4
	metricsURL = "http://" + netip.AddrPortFrom(nodeIP, 10249).String()
)

// APIOptions configure the network programming benchmark.
type APIOptions struct {
	Services, Endpoints, Changes int
	// MinSyncPeriods to measure, one agent run each.
	MinSyncPeriods []time.Duration
}

// apiRun is one agent run's numbers.
type apiRun struct {
	minSync   time.Duration
	firstSync time.Duration
	latencies []time.Duration
	writes    []time.Duration // of which the apiserver's Update round trip
	rss, peak int64           // KiB
}

// RunAPI measures network programming latency against a real apiserver:
// the time from an EndpointSlice write (client-go Update) to the change
// showing up in the node's nftables ruleset (seen by `nft monitor`), with
// svcproxy running as its own process, as on a node, so its RSS is its own.
func RunAPI(ctx context.Context, out io.Writer, opts APIOptions) error {
	env, err := newAPIEnv(ctx, out)
	if err != nil {
		return err
	}
	defer env.close()
	start := time.Now()
	slices, err := env.populate(ctx, opts.Services, opts.Endpoints)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "created %d Services and EndpointSlices (%d endpoints each) in %v\n\n", opts.Services, opts.Endpoints, time.Since(start).Round(time.Second))
	fmt.Fprintf(out, "%-14s %-16s %-10s %-10s %-10s %-10s %-10s\n", "minSyncPeriod", "first sync", "p50", "p99", "max", "RSS", "peak RSS")
	for i, ms := range opts.MinSyncPeriods {
		r, err := env.measure(ctx, slices, opts.Changes, ms, i)
		if err != nil {
			return err
		}
		p := percentiles(r.latencies)
		fmt.Fprintf(out, "%-14v %-16v %-10v %-10v %-10v %-10s %-10s  slowest: %v\n", ms, r.firstSync.Round(time.Millisecond),
			p[50].Round(time.Millisecond), p[99].Round(time.Millisecond), p[100].Round(time.Millisecond), mib(r.rss), mib(r.peak), slowest(r.latencies, 3))
		fmt.Fprintf(out, "%-14s the apiserver's Update round trip: p50 %v, max %v\n", "", percentiles(r.writes)[50].Round(time.Millisecond), percentiles(r.writes)[100].Round(time.Millisecond))
	}
	return nil
}

type apiEnv struct {
	cp     *controlplane.ControlPlane
	netns  string // node1's namespace, with nodeIP
	client kubernetes.Interface
	work   string
	log    io.Writer
}

func newAPIEnv(ctx context.Context, log io.Writer) (*apiEnv, error) {
	fmt.Fprintln(log, "building or finding kube-apiserver and etcd…")
	dir, err := controlplane.Binaries(ctx, false)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "svcproxy-bench-")
	if err != nil {
		return nil, err
	}
	e := &apiEnv{work: work, log: log}
	if e.cp, err = controlplane.Start(ctx, controlplane.Options{Dir: dir, WorkDir: work}); err != nil {
		e.close()
		return nil, err
	}
	e.netns = fmt.Sprintf("svcpbench-%d-node1", os.Getpid())
	if err = makeNetns(e.netns, netip.PrefixFrom(nodeIP, 24)); err != nil {
		e.netns = ""
		e.close()
		return nil, err
	}
	e.client = e.cp.Client()
	return e, nil
}

func (e *apiEnv) close() {
	if e.netns != "" {
		netwire.Delete(e.netns)
	}
	if e.cp != nil {
		e.cp.Stop()
	}
	os.RemoveAll(e.work)
}

// populate creates node1, and n Services each with one slice of eps
// endpoints, from parallel writers.
func (e *apiEnv) populate(ctx context.Context, n, eps int) ([]*discovery.EndpointSlice, error) {
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{v1.LabelTopologyZone: "zone-a"}},
		Status:     v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: nodeIP.String()}}},
	}
	if _, err := e.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	out := make([]*discovery.EndpointSlice, n)
	var mu sync.Mutex
	var first error
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				s, err := e.createService(ctx, i, eps)
				mu.Lock()
				out[i] = s
				if err != nil && first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return out, first
}

func (e *apiEnv) createService(ctx context.Context, i, eps int) (*discovery.EndpointSlice, error) {
	name := fmt.Sprintf("svc-%05d", i)
	svc := newService("default", name)
	if _, err := e.client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create Service %s: %w", name, err)
	}
	s, node := newSlice("default", name+"-1", name, v1.ProtocolTCP), "node2"
	for j := range eps {
		ip := netip.AddrFrom4([4]byte{10, 244, byte(j + 1), byte(i%250 + 2)})
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Addresses: []string{ip.String()}, NodeName: &node})
	}
	s, err := e.client.DiscoveryV1().EndpointSlices("default").Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create EndpointSlice %s-1: %w", name, err)
	}
	return s, nil
}

// measure runs one agent with minSync and times changes single-endpoint
// changes, spread over the Services. run makes the new addresses unique.
func (e *apiEnv) measure(ctx context.Context, all []*discovery.EndpointSlice, changes int, minSync time.Duration, run int) (apiRun, error) {
	r := apiRun{minSync: minSync}
	agent, err := e.startAgent(minSync, run)
	if err != nil {
		return r, err
	}
	defer agent.stop()
	if r.firstSync, err = agent.waitFirstSync(ctx, e.netns); err != nil {
		return r, err
	}
	mon, err := startMonitor(e.netns)
	if err != nil {
		return r, err
	}
	defer mon.stop()
	for k := range changes {
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		i := k * len(all) / changes
		ip := netip.AddrFrom4([4]byte{10, byte(250 - run), byte(k / 250), byte(k%250 + 1)}).String()
		took, wrote, err := e.change(ctx, all, i, ip, mon)
		if err != nil {
			return r, fmt.Errorf("%w; the agent's log ends:\n%s", err, agent.tail())
		}
		r.latencies, r.writes = append(r.latencies, took), append(r.writes, wrote)
	}
	r.rss, r.peak = procMemory(strconv.Itoa(agent.Pid()))
	if dir := os.Getenv("SVCPROXY_BENCH_HEAP"); dir != "" { // for finding where the memory goes
		if _, body, err := nsrun.Get(ctx, e.netns, metricsURL+"/debug/pprof/heap", time.Minute); err == nil {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("heap-%d.pprof", run)), body, 0o644)
		}
	}
	return r, nil
}

// change rewrites one endpoint of slice i to ip and waits for ip to reach
// the kernel.
func (e *apiEnv) change(ctx context.Context, all []*discovery.EndpointSlice, i int, ip string, mon *monitor) (took, wrote time.Duration, err error) {
	s := all[i].DeepCopy()
	s.Endpoints[0].Addresses = []string{ip}
	start := time.Now()
	s.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: start.Format(time.RFC3339Nano)}
	updated, err := e.client.DiscoveryV1().EndpointSlices("default").Update(ctx, s, metav1.UpdateOptions{})
	if err != nil {
		return 0, 0, fmt.Errorf("update EndpointSlice %s: %w", s.Name, err)
	}
	wrote = time.Since(start)
	all[i] = updated
	addr := netip.MustParseAddr(ip).As4()
	seen, err := mon.wait(addr[:], 20*time.Second)
	if err != nil {
		return 0, 0, err
	}
	return seen.Sub(start), wrote, nil
}

// agentProc is svcproxy running as a node's proxy in its own process.
type agentProc struct {
	*supervise.Child
	log string
}

// startAgent runs svcproxy with kube-proxy's flags. (Flags, not a config
// file: as in kube-proxy, a config file's minSyncPeriod of 0 means "unset"
// and is defaulted to 1 s; the flag can say 0.)
func (e *apiEnv) startAgent(minSync time.Duration, run int) (*agentProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	a := &agentProc{log: filepath.Join(e.work, fmt.Sprintf("agent-%d.log", run))}
	node := nodeIP.String()
	cmd := exec.Command(self, "--kubeconfig="+e.cp.Kubeconfig(), "--hostname-override=node1", "--netns="+e.netns,
		"--proxy-mode=nftables", "--iptables-min-sync-period="+minSync.String(), "--cluster-cidr="+addrplan.ClusterCIDRv4.String(),
		"--healthz-bind-address="+node+":10256", "--metrics-bind-address="+node+":10249", "--conntrack-max-per-core=0",
		"--profiling")
	a.Child, err = supervise.Start(cmd, supervise.Options{Name: "svcproxy", Log: a.log})
	return a, err
}

func (a *agentProc) stop() { supervise.Stop(10*time.Second, a.Child) }

// waitFirstSync polls the agent's metrics until its first sync is done.
func (a *agentProc) waitFirstSync(ctx context.Context, netns string) (time.Duration, error) {
	start := time.Now()
	for deadline := start.Add(5 * time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		_, body, err := nsrun.Get(ctx, netns, metricsURL+"/metrics", 5*time.Second)
		if err == nil && syncCount(string(body)) > 0 {
			return time.Since(start), nil
		}
	}
	return 0, fmt.Errorf("agent made no sync; its log ends:\n%s", a.tail())
}

// syncCount reads the number of syncs from the agent's metrics.
func syncCount(metrics string) int {
	n := 0
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "kubeproxy_sync_proxy_rules_duration_seconds_count") {
			fields := strings.Fields(l)
			v, _ := strconv.Atoi(fields[len(fields)-1])
			n = max(n, v)
		}
	}
	return n
}

func (a *agentProc) tail() string {
	data, _ := os.ReadFile(a.log)
	return lastLines(string(data), 20)
}

// monitor listens to the nf_tables netlink multicast group of a namespace
// (what `nft monitor` listens to, without nft's cache of the whole ruleset,
// which at 10,000 Services takes it longer to load than the benchmark
// runs) and timestamps each message.
type monitor struct {
	conn *netlink.Conn
	mu   sync.Mutex
	msgs []timedMsg
	wake chan struct{}
}

type timedMsg struct {
	at   time.Time
	data []byte
}

func startMonitor(ns string) (*monitor, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(h), Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)})
	if err != nil {
		return nil, fmt.Errorf("nf_tables monitor in %s: %w", ns, err)
	}
	m := &monitor{conn: conn, wake: make(chan struct{}, 1)}
	go m.read()
	if err := m.probe(ns); err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

func (m *monitor) read() {
	for {
		msgs, err := m.conn.Receive()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "closed") {
				return
			}
			continue // ENOBUFS after a burst: keep listening
		}
		now := time.Now()
		m.mu.Lock()
		for _, msg := range msgs {
			m.msgs = append(m.msgs, timedMsg{now, msg.Data})
		}
		m.mu.Unlock()
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// probeTable is a table the benchmark adds to see that the monitor is
// listening before the first change.
const probeTable = "svcproxy-bench-probe"

func (m *monitor) probe(ns string) error {
	defer exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "ip", probeTable).Run()
	if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "add", "table", "ip", probeTable).CombinedOutput(); err != nil {
		return fmt.Errorf("nft add table: %v: %s", err, out)
	}
	_, err := m.wait([]byte(probeTable), 10*time.Second)
	return err
}

// wait returns when a message carrying key (an address's bytes, or the
// probe table's name) was seen; messages seen before without it are
// dropped.
func (m *monitor) wait(key []byte, limit time.Duration) (time.Time, error) {
	deadline := time.After(limit)
	for {
		m.mu.Lock()
		for _, msg := range m.msgs {
			if bytes.Contains(msg.data, key) {
				m.mu.Unlock()
				return msg.at, nil
			}
		}
		m.msgs = m.msgs[:0]
		m.mu.Unlock()
		select {
		case <-m.wake:
		case <-deadline:
			return time.Time{}, fmt.Errorf("%v did not reach the kernel within %v", key, limit)
		}
	}
}

func (m *monitor) stop() { m.conn.Close() }

// procMemory reads a process's resident set size and its peak, in KiB.
func procMemory(pid string) (rss, peak int64) {
	data, _ := os.ReadFile("/proc/" + pid + "/status")
	for _, l := range strings.Split(string(data), "\n") {
		var v int64
		if n, _ := fmt.Sscanf(l, "VmRSS: %d kB", &v); n == 1 {
			rss = v
		}
		if n, _ := fmt.Sscanf(l, "VmHWM: %d kB", &v); n == 1 {
			peak = v
		}
	}
	return rss, peak
}

// slowest returns the n largest durations, largest first.
func slowest(ds []time.Duration, n int) []time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	slices.Reverse(s)
	s = s[:min(n, len(s))]
	for i := range s {
		s[i] = s[i].Round(time.Millisecond)
	}
	return s
}

func mib(kib int64) string { return fmt.Sprintf("%d MiB", kib/1024) }

// percentiles returns the 50th, 99th and 100th percentiles (nearest rank).
func percentiles(ds []time.Duration) map[int]time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	out := map[int]time.Duration{}
	for _, p := range []int{50, 99, 100} {
		if len(s) > 0 {
			out[p] = s[(len(s)*p+99)/100-1]
		}
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
