// Package proxy is svcproxy run as kube-proxy: from a parsed kube-proxy
// command line (package config) it assembles the node agent — the source
// (Kubernetes API or a manifests directory), the dataplane of the chosen
// mode, conntrack settings and cleanup, the /healthz and /livez server, the
// health-check node ports, and the metrics server — and runs it.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/kube-proxy/config/v1alpha1"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/proxy/agent"
	"github.com/svcproxy/svcproxy/internal/proxy/config"
	"github.com/svcproxy/svcproxy/internal/proxy/conntrack"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/ipvs"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/proxy/health"
	"github.com/svcproxy/svcproxy/internal/proxy/metrics"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/proxy/source/kube"
	"github.com/svcproxy/svcproxy/internal/proxy/source/manifests"
)

// Env is where the proxy runs. The zero Env is the host: the current
// network namespace, net.Listen, a client from the configuration.
type Env struct {
	// Do runs fn in the node's network namespace (kernel writes and reads).
	Do func(fn func() error) error
	// Listen opens the servers' listeners (healthz, metrics, health-check
	// node ports).
	Listen func(network, address string) (net.Listener, error)
	// Client overrides the Kubernetes client built from clientConnection.
	Client kubernetes.Interface
	// Started, when set, is called with the agent once it is assembled.
	Started func(*agent.Agent)
	// Log is where the proxy logs; the zero Logger means klog's.
	Log logr.Logger
	// OpenConntrack overrides how the conntrack cleaner is opened (tests
	// make it fail); it returns the cleaner and what closes it.
	OpenConntrack func() (*conntrack.Cleaner, func(), error)
}

// InNetns is the Env of a node whose kernel is the named network
// namespace (--netns): rules, sockets and servers go there, the API client
// stays in the current namespace.
func InNetns(name string, log logr.Logger) Env {
	return Env{
		Do:     func(fn func() error) error { return nsrun.Do(name, fn) },
		Listen: func(network, addr string) (net.Listener, error) { return nsrun.Listen(name, network, addr) },
		Log:    log,
	}
}

func (e *Env) defaults() {
	if e.Do == nil {
		e.Do = func(fn func() error) error { return fn() }
	}
	if e.Listen == nil {
		e.Listen = net.Listen
	}
	if e.Log.GetSink() == nil {
		e.Log = klog.Background()
	}
	if e.OpenConntrack == nil {
		e.OpenConntrack = func() (*conntrack.Cleaner, func(), error) { return conntrackCleaner(*e) }
	}
}

// Run runs the proxy until ctx ends.
func Run(ctx context.Context, opts *config.Options, env Env) error {
	env.defaults()
	cfg, set := opts.Config, opts.Proxy
	nodeName, err := config.NodeName(cfg)
	if err != nil {
		return err
	}
	pc, primary, err := planConfig(opts, nodeName, env)
	if err != nil {
		return err
	}
	if err := pc.Check(capabilities(set.Mode)); err != nil {
		return err
	}
	client, err := apiClient(opts, env)
	if err != nil {
		return err
	}
	if err := setUpHost(cfg, pc, env); err != nil {
		return err
	}
	if set.Mode == config.ModeIPVS {
		if err := env.Do(ipvs.Available); err != nil {
			return fmt.Errorf("--proxy-mode=ipvs: %w", err)
		}
	}
	fams := families()
	m := metrics.NewForMode(string(set.Mode))
	dp, others := dataplanes(opts, fams, env, func(err error) {
		env.Log.Error(err, "An nftables write fell back from netlink to nft")
		m.Fallback()
	})
	for _, o := range others {
		if err := o.Cleanup(ctx); err != nil {
			env.Log.Error(err, "Removing the other proxy mode's rules")
		}
	}
	ph := health.NewProxyHealth(fams, set.SyncPeriod, nil)
	ph.OnAnswer = func(path string, code int) { answerMetric(m, path, code) }
	svcHealth := health.NewServiceHealth(health.ServiceOptions{Proxy: ph, Listen: env.Listen, Log: env.Log})
	defer svcHealth.Close()
	ct, closeCT, err := env.OpenConntrack()
	if err != nil {
		// Without it UDP clients stay stuck on removed endpoints: run on
		// (the rules are still right), but as unhealthy, saying why.
		why := "conntrack cleanup is off (stale UDP flows will not be deleted)"
		env.Log.Error(err, why)
		ph.Broken(fmt.Sprintf("%s: %v", why, err))
		ct, closeCT = nil, func() {}
	}
	defer closeCT()

	a := agent.New(agent.Options{
		Plan: pc, Families: fams, PrimaryNodePorts: primary, BindAddress: bindAddress(cfg),
		LocalFromPodCIDRs: cfg.DetectLocalMode == "NodeCIDR" && opts.Manifests == "",
		MinSyncPeriod:     set.MinSyncPeriod, SyncPeriod: set.SyncPeriod,
		Dataplane: dp, Conntrack: ct, Health: ph, Services: svcHealth, Metrics: m, Log: env.Log,
	})
	if opts.Manifests != "" {
		ph.SyncNode(standaloneNode(nodeName)) // no Node object: the node is eligible
	}
	if env.Started != nil {
		env.Started(a)
	}
	ev := events{client: client, nodeName: nodeName, log: env.Log}
	healthz := server{name: "healthz", addr: cfg.HealthzBindAddress, port: config.HealthzPort, handler: ph.Handler(),
		reason: "FailedToStartProxierHealthcheck"}
	metricsServer := server{name: "metrics", addr: cfg.MetricsBindAddress, port: config.MetricsPort,
		handler: metricsHandler(opts, m, ph, a), reason: "FailedToStartMetricServer"}
	return runAll(ctx, env,
		func(ctx context.Context) error { return serve(ctx, env, healthz, cfg.BindAddressHardFail, m, ev) },
		func(ctx context.Context) error { return serve(ctx, env, metricsServer, cfg.BindAddressHardFail, m, ev) },
		func(ctx context.Context) error { return runSource(ctx, opts, env, client, ev, nodeName, a) },
		func(ctx context.Context) error {
			t := time.NewTicker(ConfigPoll)
			defer t.Stop()
			return watchConfig(ctx, opts.ConfigFile, t.C)
		},
		a.Run,
	)
}

// metricsHandler is the metrics server's: kube-proxy's paths, svcproxy's
// answers to status and trace, pprof with enableProfiling.
func metricsHandler(opts *config.Options, m *metrics.Metrics, ph *health.ProxyHealth, a *agent.Agent) http.Handler {
	mode := string(opts.Proxy.Mode)
	h := metrics.Handler(m, mode, func() any { return opts.Config }, ph.Handler())
	h = withExplain(h, explain.Handler(mode, explainPlan(a)))
	if opts.Config.EnableProfiling {
		h = withProfiling(h)
	}
	return h
}

// Cleanup removes the rules of every mode svcproxy knows (--cleanup).
func Cleanup(ctx context.Context, opts *config.Options, env Env) error {
	env.defaults()
	fams := families()
	dp, others := dataplanes(opts, fams, env, func(err error) { env.Log.Error(err, "An nftables write fell back from netlink to nft") })
	var errs []error
	for _, d := range append([]dataplane.Dataplane{dp}, others...) {
		errs = append(errs, d.Cleanup(ctx))
	}
	return errors.Join(errs...)
}

// dataplanes returns the dataplane of the mode to run and those of the
// other modes, whose rules it removes; fallback hears of each nftables
// write that netlink refused.
func dataplanes(opts *config.Options, fams []plan.Family, env Env, fallback func(error)) (dataplane.Dataplane, []dataplane.Dataplane) {
	set := opts.Proxy
	bit := uint(set.MasqueradeBit)
	nft := inNetns{nftables.New(nftables.Options{Families: fams, MasqueradeBit: bit, Fallback: fallback, Log: env.Log}), env.Do}
	ipt := inNetns{iptables.New(iptables.Options{Families: fams, MasqueradeBit: bit, Log: env.Log}), env.Do}
	ivDP := ipvs.NewDataplane(ipvsOptions(opts, fams, env))
	iv := inNetns{ivDP, env.Do}
	switch set.Mode {
	case config.ModeIPTables:
		return ipt, []dataplane.Dataplane{nft, iv}
	case config.ModeIPVS:
		return iv, []dataplane.Dataplane{nft, unlessIPVSGlue{ipt, ivDP, env.Do}}
	}
	return nft, []dataplane.Dataplane{ipt, iv}
}

// ipvsOptions are the IPVS dataplane's options from the ipvs section
// (the scheduler reaches it through the plan).
func ipvsOptions(opts *config.Options, fams []plan.Family, env Env) ipvs.DataplaneOptions {
	c := opts.Config.IPVS
	o := ipvs.DataplaneOptions{
		Families: fams, MasqueradeBit: uint(opts.Proxy.MasqueradeBit), StrictARP: c.StrictARP, Log: env.Log,
		Timeouts: ipvs.Timeouts{TCP: c.TCPTimeout.Duration, TCPFin: c.TCPFinTimeout.Duration, UDP: c.UDPTimeout.Duration},
	}
	for _, s := range c.ExcludeCIDRs {
		if p, err := netip.ParsePrefix(s); err == nil { // validated by config
			o.Kernel.ExcludeCIDRs = append(o.Kernel.ExcludeCIDRs, p.Masked())
		}
	}
	return o
}

// unlessIPVSGlue cleans up the iptables mode's rules unless the node
// holds the IPVS mode's glue: it then last ran in ipvs mode, and the
// iptables mode's cleanup would only remove the chains both modes name
// alike until the first sync.
type unlessIPVSGlue struct {
	inNetns
	ipvs *ipvs.Dataplane
	do   func(fn func() error) error
}

func (u unlessIPVSGlue) Cleanup(ctx context.Context) error {
	present := false
	u.do(func() error { present = u.ipvs.HasGlue(ctx); return nil })
	if present {
		return nil
	}
	return u.inNetns.Cleanup(ctx)
}

// capabilities are what the dataplane of a mode can write.
func capabilities(mode v1alpha1.ProxyMode) plan.Capabilities {
	switch mode {
	case config.ModeIPTables:
		return iptables.Capabilities
	case config.ModeIPVS:
		return ipvs.Capabilities
	}
	return nftables.Capabilities
}

// inNetns runs a dataplane's kernel work in the node's network namespace.
type inNetns struct {
	dp dataplane.Dataplane
	do func(fn func() error) error
}

func (n inNetns) Sync(ctx context.Context, p *plan.Plan, ch plan.Changes) error {
	return n.do(func() error { return n.dp.Sync(ctx, p, ch) })
}

func (n inNetns) Cleanup(ctx context.Context) error {
	return n.do(func() error { return n.dp.Cleanup(ctx) })
}

// RecheckAfter passes on the dataplane's request for another sync.
func (n inNetns) RecheckAfter() time.Duration {
	if r, ok := n.dp.(dataplane.Rechecker); ok {
		return r.RecheckAfter()
	}
	return 0
}

// families are the IP families the node runs: IPv6 only when the kernel has
// it.
func families() []plan.Family {
	if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
		return []plan.Family{plan.IPv4}
	}
	return []plan.Family{plan.IPv4, plan.IPv6}
}

// conntrackCleaner opens a netlink handle in the node's namespace, with
// the two netlink families the cleaner uses: netfilter for conntrack,
// route for the node's addresses. (All families would also need xfrm,
// which a kernel may lack.)
func conntrackCleaner(env Env) (*conntrack.Cleaner, func(), error) {
	var h *netlink.Handle
	err := env.Do(func() (err error) {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, func() {}, fmt.Errorf("opening a netlink socket: %w", err)
	}
	return conntrack.New(h), h.Close, nil
}

func answerMetric(m *metrics.Metrics, path string, code int) {
	if path == "/livez" {
		m.LivezAnswer(code)
	} else {
		m.HealthzAnswer(code)
	}
}

// apiClient is the Kubernetes client, nil in standalone mode.
func apiClient(opts *config.Options, env Env) (kubernetes.Interface, error) {
	if opts.Manifests != "" || env.Client != nil {
		return env.Client, nil
	}
	rc, err := kube.RestConfig(opts.Config.ClientConnection, opts.Master)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

// runSource feeds the agent from the manifests directory or the API.
func runSource(ctx context.Context, opts *config.Options, env Env, client kubernetes.Interface, ev events, nodeName string, a *agent.Agent) error {
	if opts.Manifests != "" {
		return manifests.Run(ctx, manifests.Options{Dir: opts.Manifests, Log: env.Log}, a)
	}
	ev.started(ctx)
	return kube.Run(ctx, kube.Options{Client: client, NodeName: nodeName, Resync: opts.Config.ConfigSyncPeriod.Duration}, a)
}

// runAll runs every task until ctx ends or one fails; it then stops the
// others and returns the first error.
func runAll(ctx context.Context, env Env, tasks ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(tasks))
	for _, task := range tasks {
		go func() { errc <- task(ctx) }()
	}
	var first error
	for range tasks {
		// A task that ends early without error (a disabled server) is fine.
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// Init does the privileged setup alone (--init-only): the conntrack
// settings, which a non-privileged proxy container could not write.
func Init(opts *config.Options, env Env) error {
	env.defaults()
	return env.Do(func() error { return applySysctls(opts.Config.Conntrack, sysctlRoot) })
}
