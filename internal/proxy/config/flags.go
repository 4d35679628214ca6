package config

import (
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json, as in kube-proxy
	"k8s.io/kube-proxy/config/v1alpha1"
)

// group is one titled section of the help text.
type group struct {
	title string
	set   *pflag.FlagSet
}

// flags holds the parsed command line before it becomes a configuration.
type flags struct {
	set    *pflag.FlagSet
	groups []group
	cfg    *v1alpha1.KubeProxyConfiguration // defaults, overwritten by config-bound flags

	configFile, writeConfigTo, master, manifests, netns, hostnameOverride string
	cleanup, initOnly, version, help                                      bool
	syncPeriod, minSyncPeriod, ipvsSyncPeriod, ipvsMinSyncPeriod          time.Duration
	masqueradeAll                                                         bool
	healthzPort, metricsPort                                              int32
}

// appliesWithConfig lists the flags kube-proxy v1.36 still honours when
// --config is given; every other flag is ignored in favour of the file.
var appliesWithConfig = map[string]bool{
	"config": true, "write-config-to": true, "cleanup": true, "init-only": true,
	"master": true, "hostname-override": true, "version": true, "help": true, "manifests": true, "netns": true,
	"v": true, "vmodule": true, "logging-format": true, "log-flush-frequency": true,
	"log-text-split-stream": true, "log-text-info-buffer-size": true,
	"log-json-split-stream": true, "log-json-info-buffer-size": true,
	"boot-id-file": true, "machine-id-file": true,
}

func newFlags() *flags {
	f := &flags{cfg: newConfig()}
	Default(f.cfg)
	f.groups = []group{
		{"Kubernetes connection", f.connectionFlags()},
		{"Proxy", f.proxyFlags()},
		{"Networking", f.networkingFlags()},
		{"Health and metrics", f.healthFlags()},
		{"Conntrack", f.conntrackFlags()},
		{"Logging", f.loggingFlags()},
		{"svcproxy extras", f.extraFlags()},
	}
	f.set = newSet()
	for _, g := range f.groups {
		f.set.AddFlagSet(g.set)
	}
	f.set.AddFlagSet(refusedFlags())
	f.set.AddFlagSet(noEffect())
	return f
}

func newSet() *pflag.FlagSet {
	s := pflag.NewFlagSet("svcproxy", pflag.ContinueOnError)
	s.SetOutput(io.Discard)
	s.SortFlags = false
	return s
}

func newConfig() *v1alpha1.KubeProxyConfiguration {
	cfg := &v1alpha1.KubeProxyConfiguration{}
	cfg.APIVersion, cfg.Kind = v1alpha1.SchemeGroupVersion.String(), "KubeProxyConfiguration"
	return cfg
}

func (f *flags) connectionFlags() *pflag.FlagSet {
	s, c := newSet(), &f.cfg.ClientConnection
	s.StringVar(&c.Kubeconfig, "kubeconfig", "", "Path to the kubeconfig file used to reach the API server.")
	s.StringVar(&f.master, "master", "", "API server address; overrides the server in the kubeconfig. Honoured even with --config.")
	s.StringVar(&c.ContentType, "kube-api-content-type", c.ContentType, "Content type of requests to the API server.")
	s.Float32Var(&c.QPS, "kube-api-qps", c.QPS, "Requests per second to the API server.")
	s.Int32Var(&c.Burst, "kube-api-burst", c.Burst, "Request burst to the API server.")
	s.DurationVar(&f.cfg.ConfigSyncPeriod.Duration, "config-sync-period", f.cfg.ConfigSyncPeriod.Duration, "How often the informers resync from the API server; must be > 0.")
	s.StringVar(&f.hostnameOverride, "hostname-override", "", "Name of this Node (trimmed, lower-cased); default: the host name. Overrides the file's hostnameOverride.")
	return s
}

func (f *flags) proxyFlags() *pflag.FlagSet {
	s, c := newSet(), f.cfg
	s.StringVar(&f.configFile, "config", "", "Path to a KubeProxyConfiguration file (YAML or JSON, decoded strictly).")
	s.StringVar(&f.writeConfigTo, "write-config-to", "", "Write the resulting configuration to this file and exit.")
	s.StringVar((*string)(&c.Mode), "proxy-mode", "", `Dataplane: "nftables" (svcproxy's default when blank), "iptables" or "ipvs".`)
	s.BoolVar(&f.cleanup, "cleanup", false, "Remove everything svcproxy installed and exit.")
	s.BoolVar(&f.initOnly, "init-only", false, "Do the setup that needs full root privileges (conntrack sysctls) and exit.")
	s.DurationVar(&f.syncPeriod, "iptables-sync-period", 30*time.Second, "Full resync interval (any mode but ipvs); must be > 0.")
	s.DurationVar(&f.minSyncPeriod, "iptables-min-sync-period", time.Second, "Shortest gap between syncs (any mode but ipvs); 0 syncs on every change.")
	s.DurationVar(&f.ipvsSyncPeriod, "ipvs-sync-period", 30*time.Second, "Full resync interval in ipvs mode.")
	s.DurationVar(&f.ipvsMinSyncPeriod, "ipvs-min-sync-period", time.Second, "Shortest gap between syncs in ipvs mode.")
	s.StringVar(&c.IPVS.Scheduler, "ipvs-scheduler", "", "IPVS scheduler (ipvs mode only): rr (when blank), wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq or mh.")
	s.StringSliceVar(&c.IPVS.ExcludeCIDRs, "ipvs-exclude-cidrs", nil, "CIDRs whose IPVS virtual servers svcproxy leaves alone (ipvs mode only).")
	s.BoolVar(&c.IPVS.StrictARP, "ipvs-strict-arp", false, "Set arp_ignore=1 and arp_announce=2 (ipvs mode only).")
	s.DurationVar(&c.IPVS.TCPTimeout.Duration, "ipvs-tcp-timeout", 0, "Idle IPVS TCP timeout, 0 leaves it as is.")
	s.DurationVar(&c.IPVS.TCPFinTimeout.Duration, "ipvs-tcpfin-timeout", 0, "IPVS TCP timeout after FIN, 0 leaves it as is.")
	s.DurationVar(&c.IPVS.UDPTimeout.Duration, "ipvs-udp-timeout", 0, "IPVS UDP timeout, 0 leaves it as is.")
	s.Var(gatesValue(c.FeatureGates), "feature-gates", "key=bool pairs of kube-proxy v1.36's feature gates. An unknown gate, or a locked one set against its lock, is refused as kube-proxy refuses it; a gate asking for what svcproxy does not do is refused naming it (docs/flags.md lists them); the others have no effect on a Service proxy, as in kube-proxy.")
	s.Int32Var(c.OOMScoreAdj, "oom-score-adj", *c.OOMScoreAdj, "Written to /proc/self/oom_score_adj at start, in [-1000, 1000]; lowering it needs CAP_SYS_RESOURCE, without which svcproxy warns and keeps the kubelet's value.")
	return s
}

func (f *flags) networkingFlags() *pflag.FlagSet {
	s, c := newSet(), f.cfg
	s.StringVar(&c.ClusterCIDR, "cluster-cidr", "", "Pod CIDR of the cluster, or a comma-separated dual-stack pair; traffic from it is local.")
	s.StringVar((*string)(&c.DetectLocalMode), "detect-local-mode", string(c.DetectLocalMode), "How local traffic is recognised: ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix.")
	s.StringVar(&c.DetectLocal.BridgeInterface, "pod-bridge-interface", "", "Bridge whose traffic is local (detect-local-mode BridgeInterface).")
	s.StringVar(&c.DetectLocal.InterfaceNamePrefix, "pod-interface-name-prefix", "", "Interface prefix whose traffic is local (detect-local-mode InterfaceNamePrefix).")
	s.StringSliceVar(&c.NodePortAddresses, "nodeport-addresses", nil, `CIDRs of the node IPs that accept NodePorts, or "primary"; empty means all local IPs ("primary" in nftables mode).`)
	s.BoolVar(&f.masqueradeAll, "masquerade-all", false, "SNAT all traffic sent to Service cluster IPs.")
	s.Int32Var(c.IPTables.MasqueradeBit, "iptables-masquerade-bit", *c.IPTables.MasqueradeBit, "fwmark bit that marks packets to SNAT (iptables and ipvs modes), in [0, 31].")
	s.BoolVar(c.IPTables.LocalhostNodePorts, "iptables-localhost-nodeports", *c.IPTables.LocalhostNodePorts, "Accept NodePorts on 127.0.0.1 (iptables mode, IPv4 only; never in nftables mode, as in kube-proxy). NOTE: svcproxy's default is false, kube-proxy's is true. Localhost NodePorts need net.ipv4.conf.all.route_localnet=1, which exposes the node's 127.0.0.1 services to its neighbours (CVE-2020-8558); svcproxy then adds kube-proxy's KUBE-FIREWALL rule against that.")
	s.Var(ipValue{&c.BindAddress}, "bind-address", "This node's primary IP if the Node object does not say; no socket binds to it.")
	return s
}

func (f *flags) healthFlags() *pflag.FlagSet {
	s, c := newSet(), f.cfg
	s.Var(ipPortValue{&c.HealthzBindAddress}, "healthz-bind-address", "IP[:port] of the /healthz and /livez server.")
	s.Var(ipPortValue{&c.MetricsBindAddress}, "metrics-bind-address", "IP[:port] of the /metrics server.")
	s.BoolVar(&c.BindAddressHardFail, "bind-address-hard-fail", false, "Exit if the health or metrics server cannot bind its port; otherwise log it and retry every 5 s while the proxy runs.")
	s.BoolVar(&c.EnableProfiling, "profiling", false, "Serve /debug/pprof on the metrics server.")
	s.StringVar(&c.ShowHiddenMetricsForVersion, "show-hidden-metrics-for-version", "", "Show the metrics hidden since the previous minor version; only "+HiddenMetricsVersion+" is allowed, as in kube-proxy v1.36. svcproxy has no hidden metrics, so it shows every metric either way.")
	s.Int32Var(&f.healthzPort, "healthz-port", 10256, "Port of the health server, 0 disables it.")
	s.Int32Var(&f.metricsPort, "metrics-port", 10249, "Port of the metrics server.")
	_ = s.MarkDeprecated("healthz-port", "use --healthz-bind-address")
	_ = s.MarkDeprecated("metrics-port", "use --metrics-bind-address")
	return s
}

func (f *flags) conntrackFlags() *pflag.FlagSet {
	s, c := newSet(), &f.cfg.Conntrack
	s.Int32Var(c.MaxPerCore, "conntrack-max-per-core", *c.MaxPerCore, "Conntrack entries per CPU core; 0 leaves the kernel's limit alone and ignores --conntrack-min.")
	s.Int32Var(c.Min, "conntrack-min", *c.Min, "Lowest conntrack limit to set, whatever the core count.")
	s.DurationVar(&c.TCPEstablishedTimeout.Duration, "conntrack-tcp-timeout-established", c.TCPEstablishedTimeout.Duration, "Idle timeout of established TCP entries, 0 leaves it as is.")
	s.DurationVar(&c.TCPCloseWaitTimeout.Duration, "conntrack-tcp-timeout-close-wait", c.TCPCloseWaitTimeout.Duration, "Timeout of TCP entries in CLOSE_WAIT.")
	s.BoolVar(&c.TCPBeLiberal, "conntrack-tcp-be-liberal", false, "Do not mark out-of-window TCP packets INVALID.")
	s.DurationVar(&c.UDPTimeout.Duration, "conntrack-udp-timeout", 0, "Timeout of unreplied UDP entries, 0 leaves it as is.")
	s.DurationVar(&c.UDPStreamTimeout.Duration, "conntrack-udp-timeout-stream", 0, "Timeout of assured UDP entries, 0 leaves it as is.")
	return s
}

func (f *flags) loggingFlags() *pflag.FlagSet {
	s := newSet()
	logsapi.AddFlags(&f.cfg.Logging, s)
	s.BoolVar(&f.version, "version", false, "Print the version and exit.")
	s.BoolVarP(&f.help, "help", "h", false, "Print this help and exit.")
	return s
}

func (f *flags) extraFlags() *pflag.FlagSet {
	s := newSet()
	s.StringVar(&f.manifests, "manifests", "", "Directory of Service and EndpointSlice YAML to serve without Kubernetes.")
	s.StringVar(&f.netns, "netns", "", "Program the rules of this named network namespace (ip netns) and serve health and metrics inside it, while reaching the API from the current one. For labs and benchmarks that run several nodes on one machine.")
	return s
}

// options copies the flags that are not part of the configuration.
func (f *flags) options() *Options {
	return &Options{
		ConfigFile: f.configFile, WriteConfigTo: f.writeConfigTo, Master: f.master, Manifests: f.manifests, Netns: f.netns,
		Cleanup: f.cleanup, InitOnly: f.initOnly, Version: f.version, Help: f.help,
	}
}

// config builds the configuration as kube-proxy v1.36 does: with --config the
// file wins and only logging flags and --hostname-override are laid over it;
// without it the flags are the configuration.
func (f *flags) config(opts *Options) (*v1alpha1.KubeProxyConfiguration, error) {
	cfg := f.cfg
	if f.configFile != "" {
		loaded, err := Load(f.configFile)
		if err != nil {
			return nil, err
		}
		if err := f.overlayLogging(&loaded.Logging); err != nil {
			return nil, err
		}
		cfg = loaded
		opts.Warnings = f.ignoredWithConfig()
	} else {
		f.applyModeFlags()
	}
	if f.hostnameOverride != "" {
		name := strings.ToLower(strings.TrimSpace(f.hostnameOverride))
		if name == "" {
			return nil, fmt.Errorf("flag --hostname-override: %q is empty once spaces are trimmed", f.hostnameOverride)
		}
		cfg.HostnameOverride = name
	}
	return cfg, nil
}

// applyModeFlags puts the mode-neutral flags into the section the chosen
// mode reads, and applies the deprecated port flags, as kube-proxy does
// when there is no config file.
func (f *flags) applyModeFlags() {
	c := f.cfg
	sync, minSync := f.syncPeriod, f.minSyncPeriod
	if c.Mode == ModeIPVS {
		sync, minSync = f.ipvsSyncPeriod, f.ipvsMinSyncPeriod
	}
	switch c.Mode {
	case ModeNFTables:
		c.NFTables.SyncPeriod.Duration, c.NFTables.MinSyncPeriod.Duration = sync, minSync
		c.NFTables.MasqueradeAll = f.masqueradeAll
	case ModeIPVS:
		c.IPVS.SyncPeriod.Duration, c.IPVS.MinSyncPeriod.Duration = sync, minSync
		c.IPTables.MasqueradeAll = f.masqueradeAll
	default:
		c.IPTables.SyncPeriod.Duration, c.IPTables.MinSyncPeriod.Duration = sync, minSync
		c.IPTables.MasqueradeAll = f.masqueradeAll
	}
	c.HealthzBindAddress = withPortFlag(c.HealthzBindAddress, f.healthzPort)
	c.MetricsBindAddress = withPortFlag(c.MetricsBindAddress, f.metricsPort)
}

// withPortFlag applies a deprecated --*-port flag: 0 disables the server, any
// other port completes an address given without one.
func withPortFlag(addr string, port int32) string {
	if port == 0 {
		return ""
	}
	return appendPort(addr, int(port))
}

// overlayLogging lays the logging flags that were given over the file's
// logging section, so "--config ... -v=4" raises the verbosity.
func (f *flags) overlayLogging(dst *logsapi.LoggingConfiguration) error {
	clone := pflag.NewFlagSet("logging", pflag.ContinueOnError)
	logsapi.AddFlags(dst, clone)
	var err error
	clone.VisitAll(func(fl *pflag.Flag) {
		given := f.set.Lookup(fl.Name)
		if err == nil && given != nil && given.Changed {
			err = clone.Set(fl.Name, given.Value.String())
		}
	})
	return err
}

// ignoredWithConfig names the flags given beside --config that kube-proxy
// silently ignores; svcproxy ignores them too but says so.
func (f *flags) ignoredWithConfig() []string {
	var out []string
	f.set.Visit(func(fl *pflag.Flag) {
		if !appliesWithConfig[fl.Name] {
			out = append(out, fmt.Sprintf("flag --%s is ignored because --config is given (as in kube-proxy); set it in the file", fl.Name))
		}
	})
	return out
}

// ipValue accepts an IP address; an empty value leaves the default.
type ipValue struct{ dst *string }

func (v ipValue) String() string {
	if v.dst == nil {
		return ""
	}
	return *v.dst
}
func (v ipValue) Type() string { return "ip" }
func (v ipValue) Set(s string) error {
	if s == "" {
		return nil
	}
	if net.ParseIP(s) == nil {
		return fmt.Errorf("%q is not an IP address", s)
	}
	*v.dst = s
	return nil
}

// ipPortValue accepts IP or IP:port; an empty value leaves the default, as
// kube-proxy's flag does.
type ipPortValue struct{ dst *string }

func (v ipPortValue) String() string {
	if v.dst == nil {
		return ""
	}
	return *v.dst
}
func (v ipPortValue) Type() string { return "ip[:port]" }
func (v ipPortValue) Set(s string) error {
	if s == "" {
		return nil
	}
	if net.ParseIP(s) == nil {
		host, port, err := net.SplitHostPort(s)
		if err != nil || net.ParseIP(host) == nil {
			return fmt.Errorf("%q is not IP or IP:port", s)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%q has no valid port", s)
		}
	}
	*v.dst = s
	return nil
}

// gatesValue parses "Name=true,Other=false" into a map.
type gatesValue map[string]bool

func (v gatesValue) String() string {
	pairs := make([]string, 0, len(v))
	for k, b := range v {
		pairs = append(pairs, fmt.Sprintf("%s=%t", k, b))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}
func (v gatesValue) Type() string { return "mapStringBool" }
func (v gatesValue) Set(s string) error {
	for _, pair := range strings.Split(s, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		name, val, ok := strings.Cut(pair, "=")
		b, err := strconv.ParseBool(strings.TrimSpace(val))
		if !ok || err != nil {
			return fmt.Errorf("%q is not Name=true or Name=false", pair)
		}
		v[strings.TrimSpace(name)] = b
	}
	return nil
}
