// Package controlplane runs a real etcd and kube-apiserver on the loopback
// interface, for tests and for the lab, and on request kube-controller-manager
// and kube-scheduler too. The lab runs them inside a network namespace of
// their own (Options.Netns), where the apiserver serves on an address of that
// namespace and publishes it as the endpoint of default/kubernetes. No kubelets run: clients (or the lab's node agents)
// create Nodes and Pods themselves.
//
// Binaries finds (or builds, via package pinned) the executables, Start
// launches the processes (package supervise: each in a process group of its
// own) under a work directory, and Stop stops exactly those processes.
// testkit/apiserver wraps the two for tests.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/svcproxy/svcproxy/internal/addrplan"
	"github.com/svcproxy/svcproxy/internal/timescale"
)

// DefaultServiceCIDR is the service cluster IP range when Options leaves it
// empty: the address plan's, dual-stack, IPv4 first.
var DefaultServiceCIDR = addrplan.ServiceCIDRv4.String() + "," + addrplan.ServiceCIDRv6.String()

// ServiceAccountIssuer is the issuer of the service-account tokens.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// AdminUser is the static-token user Client and RestConfig authenticate as;
// it is in the system:masters group, so RBAC lets it do anything.
const AdminUser = "svcproxy-admin"

const (
	readyTimeout = 60 * time.Second // bound on each process becoming ready
	stopGrace    = 10 * time.Second // SIGTERM to SIGKILL
	pollInterval = 100 * time.Millisecond
)

// Options configures Start.
type Options struct {
	// Dir holds the etcd and kube-apiserver binaries (see Binaries).
	Dir string
	// WorkDir receives etcd's data, the certificates, keys, token file,
	// kubeconfig and the logs etcd.log and kube-apiserver.log.
	WorkDir string
	// Logs, if set, also receives both processes' output.
	Logs io.Writer
	// ServiceCIDR is the service cluster IP range (DefaultServiceCIDR if
	// empty).
	ServiceCIDR string
	// Controllers also starts kube-controller-manager (Controllers' list)
	// and kube-scheduler, both with the admin kubeconfig.
	Controllers bool
	// Netns, if set, runs every process inside that named network namespace
	// (which must exist, with lo up and Address on an interface): etcd on
	// its loopback, the apiserver on Address:APIServerPort, published as the
	// endpoint of default/kubernetes. Clients from Client, RestConfig and
	// the readiness checks connect from inside it; the kubeconfig names
	// Address, for processes that run where Address is reachable.
	Netns   string
	Address netip.Addr
	// Detached starts every process in its own session, so that it outlives
	// the caller (the lab's `up` returns while the cluster runs on). Without
	// it the processes die with the caller. Detached processes write only to
	// their log files: Logs must be nil.
	Detached bool
}

// ControlPlane is a running etcd and kube-apiserver. Its methods are safe for
// concurrent use.
type ControlPlane struct {
	opts       Options
	etcdURL    string
	etcdPeer   string
	apiURL     string
	apiArgs    []string
	config     *rest.Config
	client     kubernetes.Interface
	kubeconfig string
	logs       io.Writer

	mu          sync.Mutex
	etcd        *process
	apiserver   *process
	controllers []*process // kube-controller-manager, kube-scheduler
	stopped     bool
}

// Start launches etcd and kube-apiserver on free 127.0.0.1 ports and returns
// once the apiserver is ready (the default/kubernetes Service exists). ctx
// bounds only the startup; the processes run until Stop. On error nothing is
// left running.
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	c, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	if err := c.startAll(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// prepare validates opts, picks ports and writes keys and config files.
func prepare(opts Options) (*ControlPlane, error) {
	if opts.Dir == "" || opts.WorkDir == "" {
		return nil, errors.New("controlplane: Options.Dir and Options.WorkDir are required")
	}
	if opts.Detached && opts.Logs != nil {
		return nil, errors.New("controlplane: Options.Logs must be nil with Detached")
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = DefaultServiceCIDR
	}
	serviceIP, err := firstServiceIP(opts.ServiceCIDR)
	if err != nil {
		return nil, err
	}
	if err := checkBinaries(opts.Dir, opts.binaries()); err != nil {
		return nil, err
	}
	if (opts.Netns != "") != opts.Address.IsValid() {
		return nil, errors.New("controlplane: Options.Netns and Options.Address go together")
	}
	ports, err := opts.ports()
	if err != nil {
		return nil, err
	}
	c := &ControlPlane{opts: opts, logs: opts.Logs}
	if opts.Logs != nil {
		c.logs = &lockedWriter{w: opts.Logs}
	}
	c.etcdURL = "http://" + hostPort(ports[0])
	c.apiURL = "https://" + net.JoinHostPort(opts.apiAddress().String(), strconv.Itoa(ports[2]))
	if err := c.writeFiles(ports, serviceIP); err != nil {
		return nil, err
	}
	return c, nil
}

// startAll starts etcd, then the apiserver.
func (c *ControlPlane) startAll(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, err := c.start("etcd", c.etcdArgs())
	if err != nil {
		return err
	}
	c.etcd = p
	if err := waitReady(ctx, p, c.etcdHealthy); err != nil {
		return err
	}
	if err := c.startAPIServerLocked(ctx); err != nil || !c.opts.Controllers {
		return err
	}
	for _, ctl := range []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", c.controllerManagerArgs()},
		{"kube-scheduler", c.schedulerArgs()},
	} {
		p, err := c.start(ctl.name, ctl.args)
		if err != nil {
			return err
		}
		c.controllers = append(c.controllers, p)
	}
	return nil
}

// StopAPIServer stops kube-apiserver only, leaving etcd and its data. It is
// a no-op if the apiserver is not running.
func (c *ControlPlane) StopAPIServer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver != nil {
		c.apiserver.stop(stopGrace)
		c.apiserver = nil
	}
}

// StartAPIServer starts kube-apiserver again, on the same port with the same
// flags, and waits until it is ready. It is a no-op if it is running.
func (c *ControlPlane) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("controlplane: StartAPIServer after Stop")
	}
	if c.apiserver != nil && !c.apiserver.exited() {
		return nil
	}
	return c.startAPIServerLocked(ctx)
}

// startAPIServerLocked starts the apiserver and waits for it; c.mu is held.
func (c *ControlPlane) startAPIServerLocked(ctx context.Context) error {
	p, err := c.start("kube-apiserver", c.apiArgs)
	if err != nil {
		return err
	}
	c.apiserver = p
	return waitReady(ctx, p, c.apiReady)
}

// Stop stops the apiserver and etcd and waits until both are gone. It is
// idempotent and safe to defer. WorkDir is left in place.
func (c *ControlPlane) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	for _, p := range append(c.controllers, c.apiserver, c.etcd) {
		if p != nil {
			p.stop(stopGrace)
		}
	}
}

// RestConfig returns a copy of the admin client configuration: bearer token,
// server certificate checked against the generated CA, QPS 500, burst 1000.
func (c *ControlPlane) RestConfig() *rest.Config { return rest.CopyConfig(c.config) }

// Kubeconfig returns the path of a kubeconfig file for the admin user.
func (c *ControlPlane) Kubeconfig() string { return c.kubeconfig }

// Client returns an admin clientset.
func (c *ControlPlane) Client() kubernetes.Interface { return c.client }

// URL returns the apiserver's https URL.
func (c *ControlPlane) URL() string { return c.apiURL }

// WorkDir returns the directory holding data, certificates and logs.
func (c *ControlPlane) WorkDir() string { return c.opts.WorkDir }

// PIDs returns the process IDs of the processes started so far and not yet
// stopped by StopAPIServer, by binary name. Each is also its process group's
// ID.
func (c *ControlPlane) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := map[string]int{}
	for _, p := range append([]*process{c.etcd, c.apiserver}, c.controllers...) {
		if p != nil {
			pids[p.name] = p.Pid()
		}
	}
	return pids
}

// path returns name inside the work directory.
func (c *ControlPlane) path(name string) string { return filepath.Join(c.opts.WorkDir, name) }

// waitReady polls ready until it succeeds, the process exits, ctx ends or
// readyTimeout passes.
func waitReady(ctx context.Context, p *process, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timescale.Bound(readyTimeout))
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("controlplane: %s not ready: %v (%w); log %s ends:\n%s",
				p.name, err, ctx.Err(), p.logPath, Tail(p.logPath, 4096))
		case <-tick.C:
		}
	}
}

// APIServerPort is the apiserver's port inside Options.Netns, where nothing
// else listens; the well-known etcd ports go with it.
const APIServerPort = 6443

// ports returns etcd's client and peer ports and the apiserver's: fixed
// inside a namespace of their own, free ones on the machine's loopback.
func (o Options) ports() ([]int, error) {
	if o.Netns != "" {
		return []int{2379, 2380, APIServerPort}, nil
	}
	return freePorts(3)
}

// apiAddress is where the apiserver serves and what it advertises.
func (o Options) apiAddress() netip.Addr {
	if o.Address.IsValid() {
		return o.Address
	}
	return netip.MustParseAddr("127.0.0.1")
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. The listeners are
// closed before returning, so another process could take a port in between;
// on loopback in a test that is unlikely.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// hostPort returns 127.0.0.1:port.
func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// firstServiceIP returns the first address of cidr, the ClusterIP the
// apiserver gives the default/kubernetes Service.
// A dual-stack range ("v4,v6") gives the first address of its primary
// (first) family.
func firstServiceIP(cidr string) (net.IP, error) {
	primary, _, _ := strings.Cut(cidr, ",")
	prefix, err := netip.ParsePrefix(primary)
	if err != nil {
		return nil, fmt.Errorf("controlplane: ServiceCIDR: %w", err)
	}
	return net.IP(prefix.Masked().Addr().Next().AsSlice()), nil
}

// lockedWriter serializes writes from both processes' output copiers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
