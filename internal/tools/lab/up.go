package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/timescale"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane"
)

// Options configures Up.
type Options struct {
	Name      string // the lab's name, "lab" by default
	Nodes     int    // 3 by default
	ProxyMode string // one of ProxyModes, nftables by default
	// ProxyVerbosity is each node's svcproxy -v: 0 logs starts, warnings
	// and failures, 2 also a line per sync, 4 the service ports it changed.
	ProxyVerbosity int
	// Self is the svcproxy executable the lab's processes run; the running
	// one by default.
	Self string
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
}

// Defaults for Options.
const (
	DefaultName  = "lab"
	defaultNodes = 3
	readyTimeout = 90 * time.Second // bound on the cluster becoming ready
	stopGrace    = 5 * time.Second  // SIGTERM to SIGKILL in Down
)

// RequestTimeout bounds one request of the lab's checks and walkthrough.
var RequestTimeout = timescale.Bound(5 * time.Second)

// Up brings up a lab and returns once it is ready: nodes Ready, every node's
// svcproxy healthy, cluster DNS answering, the page served. On error or
// cancellation it removes everything it made.
func Up(ctx context.Context, opts Options) (*State, error) {
	opts = opts.withDefaults()
	st, err := NewState(opts.Name, opts.Nodes, opts.Self, opts.ProxyMode)
	if err != nil {
		return nil, err
	}
	st.ProxyVerbosity = opts.ProxyVerbosity
	if err := checkMachine(opts.ProxyMode, os.Geteuid()); err != nil {
		return nil, err
	}
	if err := st.checkFree(); err != nil {
		return nil, err
	}
	p := progress{w: opts.Progress, start: time.Now()}
	p.say("binaries: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, coredns (built on first use: several minutes)")
	if st.BinDir, err = controlplane.Binaries(ctx, true, "coredns"); err != nil {
		return nil, err
	}
	if err := st.bringUp(ctx, p); err != nil {
		cleanup, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if ctx.Err() == nil { // a failure, not an interruption: keep the logs
			if kept, keepErr := st.keepLogs(); keepErr == nil {
				err = fmt.Errorf("%w (logs kept in %s)", err, kept)
			}
		}
		return nil, errors.Join(err, Down(cleanup, st.Name))
	}
	p.say("ready: %d nodes, proxy mode %s; the page: %s (svcproxy lab ui | status | kubectl | exec POD -- CMD)", len(st.Nodes), st.ProxyMode, st.UI)
	return st, nil
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Nodes == 0 {
		o.Nodes = defaultNodes
	}
	if o.ProxyMode == "" {
		o.ProxyMode = "nftables"
	}
	if o.Self == "" {
		o.Self, _ = os.Executable()
	}
	return o
}

// checkFree refuses to start over a lab that is up or half torn down.
func (s *State) checkFree() error {
	names, err := s.Namespaces()
	if err != nil {
		return err
	}
	_, statErr := os.Stat(s.Dir)
	if len(names) > 0 || statErr == nil {
		return fmt.Errorf("lab %q exists (%d namespaces, %s): run `svcproxy lab down` first", s.Name, len(names), s.Dir)
	}
	return nil
}

// bringUp does Up's work; the state is saved first, so that Down can find
// whatever exists if anything fails.
func (s *State) bringUp(ctx context.Context, p progress) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	if err := s.save(); err != nil {
		return err
	}
	if err := s.buildNetwork(); err != nil {
		return err
	}
	p.say("network: bridge %s, client %s, nodes %s", LAN, ClientIP, s.nodeSummary())
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Dir: s.BinDir, WorkDir: s.path("controlplane"), ServiceCIDR: ServiceCIDR,
		Controllers: true, Detached: true,
		Netns: s.ControlPlaneNetns(), Address: ControlPlaneIP,
	})
	if err != nil {
		return err
	}
	for name, pid := range cp.PIDs() {
		if err := s.registry().Record(name, pid, s.ControlPlaneNetns()); err != nil {
			return err
		}
	}
	p.say("control plane in %s: etcd, kube-apiserver %s, kube-controller-manager, kube-scheduler", s.ControlPlaneNetns(), cp.URL())
	if err := s.startNodes(); err != nil {
		return err
	}
	if err := s.startUI(); err != nil {
		return err
	}
	if err := createDNS(ctx, cp.Client(), cp.RestConfig().CAData); err != nil {
		return err
	}
	return s.waitReady(ctx, cp.Client(), p)
}

// startNodes starts every node's kubelet and svcproxy inside the node's
// namespace, as a DaemonSet with hostNetwork runs kube-proxy, and the pool
// controller beside the control plane, as a cloud controller manager.
func (s *State) startNodes() error {
	for _, n := range s.Nodes {
		if err := s.startProcess(n.Netns, "kubelet-"+n.Name, s.Self, "lab", "kubelet", "--name", s.Name, "--node", n.Name); err != nil {
			return err
		}
		if err := s.startProcess(n.Netns, "svcproxy-"+n.Name, s.Self, s.proxyArgs(n)...); err != nil {
			return err
		}
	}
	return s.startProcess(s.ControlPlaneNetns(), "lbpool", s.Self, "lab", "lbpool", "--name", s.Name)
}

// proxyArgs is a node's svcproxy command line: kube-proxy's flags.
func (s *State) proxyArgs(n Node) []string {
	return []string{
		"--kubeconfig=" + s.Kubeconfig,
		"--hostname-override=" + n.Name,
		"--proxy-mode=" + s.ProxyMode,
		"--cluster-cidr=" + ClusterCIDR.String() + "," + ClusterCIDRv6.String(),
		"-v=" + strconv.Itoa(s.ProxyVerbosity),
		// A node's namespace cannot set nf_conntrack_max (the machine's);
		// kind runs kube-proxy so too.
		"--conntrack-max-per-core=0",
	}
}

// waitReady waits for the nodes, their proxies and the cluster DNS.
func (s *State) waitReady(ctx context.Context, client kubernetes.Interface, p progress) error {
	steps := []struct {
		what string
		ok   func(context.Context) error
	}{
		{"nodes registered and Ready", func(ctx context.Context) error { return s.nodesReady(ctx, client) }},
		{"svcproxy healthy on every node (/healthz on :10256)", s.proxiesHealthy},
		{"cluster DNS: kube-system/coredns available behind Service kube-dns " + DNSIP.String(), func(ctx context.Context) error { return dnsReady(ctx, client) }},
		{"the page answers at " + s.UI, s.uiAnswers},
	}
	for _, step := range steps {
		if err := Poll(ctx, readyTimeout, func() error { return step.ok(ctx) }); err != nil {
			return fmt.Errorf("waiting for %s: %w", step.what, err)
		}
		p.say("%s", step.what)
	}
	return nil
}

// nodesReady checks every node's Ready condition.
func (s *State) nodesReady(ctx context.Context, client kubernetes.Interface) error {
	for _, n := range s.Nodes {
		node, err := client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !NodeReady(node) {
			return fmt.Errorf("node %s is not Ready", n.Name)
		}
	}
	return nil
}

// proxiesHealthy asks each node's svcproxy /healthz from the client, as a
// load balancer's health check would.
func (s *State) proxiesHealthy(ctx context.Context) error {
	for _, n := range s.Nodes {
		if code, _, err := nsrun.Get(ctx, s.ClientNetns(), "http://"+net.JoinHostPort(n.IP.String(), "10256")+"/healthz", RequestTimeout); err != nil || code != http.StatusOK {
			return fmt.Errorf("%s: /healthz %d %v", n.Name, code, err)
		}
	}
	return nil
}

// dnsReady checks the DNS Deployment's available replicas.
func dnsReady(ctx context.Context, client kubernetes.Interface) error {
	d, err := client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if d.Status.AvailableReplicas < *d.Spec.Replicas {
		return fmt.Errorf("coredns: %d of %d replicas available", d.Status.AvailableReplicas, *d.Spec.Replicas)
	}
	return nil
}

// Poll calls ok every 200 ms until it succeeds, limit (stretched on a slow
// machine: package timescale) passes or ctx ends; the error then carries
// ok's last error.
func Poll(ctx context.Context, limit time.Duration, ok func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timescale.Bound(limit))
	defer cancel()
	for {
		err := ok()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: last: %v", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *State) nodeSummary() string {
	out := ""
	for i, n := range s.Nodes {
		if i > 0 {
			out += ", "
		}
		out += n.Name + " " + n.IP.String() + " (" + n.Zone + ")"
	}
	return out
}

// progress prints a step with the time since Up started.
type progress struct {
	w     io.Writer
	start time.Time
}

func (p progress) say(format string, args ...any) {
	if p.w != nil {
		secs := strconv.FormatFloat(time.Since(p.start).Seconds(), 'f', 1, 64)
		fmt.Fprintf(p.w, "lab [%5ss] %s\n", secs, fmt.Sprintf(format, args...))
	}
}

// keepLogs moves the logs of a lab that failed to come up out of its
// directory, which Down removes, to a new temporary directory.
func (s *State) keepLogs() (string, error) {
	dir, err := os.MkdirTemp("", "svcproxy-lab-"+s.Name+"-logs-")
	if err != nil {
		return "", err
	}
	for _, sub := range []string{"logs", "controlplane"} {
		logs, _ := filepath.Glob(s.path(sub, "*.log"))
		for _, f := range logs {
			if err := os.Rename(f, filepath.Join(dir, filepath.Base(f))); err != nil {
				return "", err
			}
		}
	}
	return dir, nil
}
