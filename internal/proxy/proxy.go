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
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/proxy/agent"
	"github.com/svcproxy/svcproxy/internal/proxy/config"
	"github.com/svcproxy/svcproxy/internal/proxy/conntrack"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
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
	Logf    func(format string, args ...any)
	// OpenConntrack overrides how the conntrack cleaner is opened (tests
	// make it fail); it returns the cleaner and what closes it.
	OpenConntrack func() (*conntrack.Cleaner, func(), error)
}

// InNetns is the Env of a node whose kernel is the named network
// namespace (--netns): rules, sockets and servers go there, the API client
// stays in the current namespace.
func InNetns(name string, logf func(string, ...any)) Env {
	return Env{
		Do:     func(fn func() error) error { return nsrun.Do(name, fn) },
		Listen: func(network, addr string) (net.Listener, error) { return nsrun.Listen(name, network, addr) },
		Logf:   logf,
	}
}

func (e *Env) defaults() {
	if e.Do == nil {
		e.Do = func(fn func() error) error { return fn() }
	}
	if e.Listen == nil {
		e.Listen = net.Listen
	}
	if e.Logf == nil {
		e.Logf = log.Printf
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
	fams := families()
	m := metrics.NewForMode(string(set.Mode))
	dp, others := dataplanes(set, fams, env, func(err error) {
		env.Logf("%v", err)
		m.Fallback()
	})
	for _, o := range others {
		if err := o.Cleanup(ctx); err != nil {
			env.Logf("removing the other proxy mode's rules: %v", err)
		}
	}
	if err := env.Do(func() error { return applySysctls(cfg.Conntrack, sysctlRoot) }); err != nil {
		env.Logf("conntrack settings: %v", err)
	}
	ph := health.NewProxyHealth(fams, set.SyncPeriod, nil)
	ph.OnAnswer = func(path string, code int) { answerMetric(m, path, code) }
	svcHealth := health.NewServiceHealth(health.ServiceOptions{Addresses: healthAddrs(pc), Proxy: ph, Listen: env.Listen})
	defer svcHealth.Close()
	ct, closeCT, err := env.OpenConntrack()
	if err != nil {
		// Without it UDP clients stay stuck on removed endpoints: run on
		// (the rules are still right), but as unhealthy, saying why.
		why := fmt.Sprintf("conntrack cleanup is off (stale UDP flows will not be deleted): %v", err)
		env.Logf("%s", why)
		ph.Broken(why)
		ct, closeCT = nil, func() {}
	}
	defer closeCT()

	a := agent.New(agent.Options{
		Plan: pc, Families: fams, PrimaryNodePorts: primary,
		LocalFromPodCIDRs: cfg.DetectLocalMode == "NodeCIDR" && opts.Manifests == "",
		MinSyncPeriod:     set.MinSyncPeriod, SyncPeriod: set.SyncPeriod,
		Dataplane: dp, Conntrack: ct, Health: ph, Services: svcHealth, Metrics: m, Logf: env.Logf,
	})
	if opts.Manifests != "" {
		ph.SyncNode(standaloneNode(nodeName)) // no Node object: the node is eligible
	}
	if env.Started != nil {
		env.Started(a)
	}
	return runAll(ctx, env,
		func(ctx context.Context) error {
			return serve(ctx, env, cfg.HealthzBindAddress, config.HealthzPort, ph.Handler())
		},
		func(ctx context.Context) error {
			h := metrics.Handler(m, string(set.Mode), func() any { return cfg }, ph.Handler())
			h = withExplain(h, explain.Handler(string(set.Mode), explainPlan(a)))
			if cfg.EnableProfiling {
				h = withProfiling(h)
			}
			return serve(ctx, env, cfg.MetricsBindAddress, config.MetricsPort, h)
		},
		func(ctx context.Context) error { return runSource(ctx, opts, env, nodeName, a) },
		a.Run,
	)
}

// withExplain serves `svcproxy status` and `svcproxy trace` their answers
// under /svcproxy/ on the metrics server.
func withExplain(h, ex http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.Handle("/svcproxy/", ex)
	return mux
}

// explainPlan lends the agent's last plan and sync status to the explain
// handlers.
func explainPlan(a *agent.Agent) func(fn func(*plan.Plan, explain.SyncStatus)) {
	return func(fn func(*plan.Plan, explain.SyncStatus)) {
		a.WithPlan(func(p *plan.Plan, st agent.Status) {
			sync := explain.SyncStatus{At: st.Last, Took: st.Took.String(), Full: st.Full, Syncs: st.Syncs, Failures: st.Failures, InProgress: st.InProgress}
			if st.Err != nil {
				sync.Error = st.Err.Error()
			}
			fn(p, sync)
		})
	}
}

// withProfiling adds Go's /debug/pprof/ handlers, as kube-proxy's
// enableProfiling does on its metrics server.
func withProfiling(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Cleanup removes the rules of every mode svcproxy knows (--cleanup).
func Cleanup(ctx context.Context, opts *config.Options, env Env) error {
	env.defaults()
	fams := families()
	dp, others := dataplanes(opts.Proxy, fams, env, func(err error) { env.Logf("%v", err) })
	var errs []error
	for _, d := range append([]dataplane.Dataplane{dp}, others...) {
		errs = append(errs, d.Cleanup(ctx))
	}
	return errors.Join(errs...)
}

// dataplanes returns the dataplane of the mode to run and those of the
// other modes, whose rules it removes; fallback hears of each nftables
// write that netlink refused.
func dataplanes(set config.Settings, fams []plan.Family, env Env, fallback func(error)) (dataplane.Dataplane, []dataplane.Dataplane) {
	bit := uint(set.MasqueradeBit)
	nft := inNetns{nftables.New(nftables.Options{Families: fams, MasqueradeBit: bit, Fallback: fallback}), env.Do}
	ipt := inNetns{iptables.New(iptables.Options{Families: fams, MasqueradeBit: bit}), env.Do}
	if set.Mode == config.ModeIPTables {
		return ipt, []dataplane.Dataplane{nft}
	}
	return nft, []dataplane.Dataplane{ipt}
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

// healthAddrs are the addresses health-check node ports listen on: the
// NodePort addresses when restricted, else all.
func healthAddrs(pc plan.Config) []netip.Addr {
	var out []netip.Addr
	for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
		ips, any := pc.NodePortIPs(f)
		if any {
			return nil
		}
		out = append(out, ips...)
	}
	return out
}

// serve runs an HTTP server on addr (":port" defaulting) until ctx ends. An
// empty address disables the server.
func serve(ctx context.Context, env Env, addr string, port int, h http.Handler) error {
	addr, err := config.BindAddress(addr, port)
	if err != nil || addr == "" {
		return err
	}
	l, err := env.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runSource feeds the agent from the manifests directory or the API.
func runSource(ctx context.Context, opts *config.Options, env Env, nodeName string, a *agent.Agent) error {
	if opts.Manifests != "" {
		return manifests.Run(ctx, manifests.Options{Dir: opts.Manifests, Logf: env.Logf}, a)
	}
	client := env.Client
	if client == nil {
		rc, err := kube.RestConfig(opts.Config.ClientConnection, opts.Master)
		if err != nil {
			return err
		}
		if client, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}
	announceStart(ctx, client, nodeName, env.Logf)
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
