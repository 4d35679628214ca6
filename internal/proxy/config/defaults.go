package config

import (
	"net"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kube-proxy/config/v1alpha1"
)

// kube-proxy's well-known ports and defaults (pkg/proxy/apis/config/v1alpha1
// defaults.go and cmd/kube-proxy/app/server_linux.go, v1.36).
const (
	HealthzPort      = 10256
	MetricsPort      = 10249
	defaultOOMScore  = -999
	defaultMasqBit   = 14
	defaultSync      = 30 * time.Second
	defaultMinSync   = time.Second
	defaultProtobuf  = "application/vnd.kubernetes.protobuf"
	NodePortsPrimary = "primary" // the special nodePortAddresses value
)

// Default fills every unset field with kube-proxy v1.36's default (but
// iptables.localhostNodePorts, false in svcproxy), including
// the Linux platform defaults (detectLocalMode ClusterCIDR, and
// nodePortAddresses "primary" when mode is explicitly nftables). A blank
// mode stays blank: Resolve maps it to svcproxy's nftables dataplane while
// keeping kube-proxy's blank-mode meaning (iptables section, NodePorts on
// all local IPs). Default is idempotent.
func Default(cfg *v1alpha1.KubeProxyConfiguration) {
	defaultAddresses(cfg)
	defaultModeSections(cfg)
	defaultConntrack(&cfg.Conntrack)
	defaultClient(cfg)
	if cfg.OOMScoreAdj == nil {
		cfg.OOMScoreAdj = ptr[int32](defaultOOMScore)
	}
	logsapi.SetRecommendedLoggingConfiguration(&cfg.Logging)
	platformDefaults(cfg)
}

// platformDefaults are the defaults kube-proxy applies after flags and file
// are combined. Flags-only configurations get only these after parsing, so
// that a flag's explicit 0 (--iptables-min-sync-period=0) or disabled server
// (--healthz-port=0) is not mistaken for "unset".
func platformDefaults(cfg *v1alpha1.KubeProxyConfiguration) {
	if cfg.DetectLocalMode == "" {
		cfg.DetectLocalMode = "ClusterCIDR"
	}
	if cfg.Mode == ModeNFTables && len(cfg.NodePortAddresses) == 0 {
		cfg.NodePortAddresses = []string{NodePortsPrimary}
	}
}

func defaultAddresses(cfg *v1alpha1.KubeProxyConfiguration) {
	if cfg.BindAddress == "" {
		cfg.BindAddress = "0.0.0.0"
	}
	healthzHost, metricsHost := "0.0.0.0", "127.0.0.1"
	if ip := net.ParseIP(cfg.BindAddress); ip == nil || ip.To4() == nil {
		healthzHost, metricsHost = "::", "::1"
	}
	cfg.HealthzBindAddress = defaultAddress(cfg.HealthzBindAddress, healthzHost, HealthzPort)
	cfg.MetricsBindAddress = defaultAddress(cfg.MetricsBindAddress, metricsHost, MetricsPort)
}

func defaultAddress(addr, host string, port int) string {
	if addr == "" {
		return net.JoinHostPort(host, strconv.Itoa(port))
	}
	return appendPort(addr, port)
}

// appendPort adds port to a bare IP; anything else is returned unchanged
// for validation to judge.
func appendPort(addr string, port int) string {
	if _, _, err := net.SplitHostPort(addr); err == nil || net.ParseIP(addr) == nil {
		return addr
	}
	return net.JoinHostPort(addr, strconv.Itoa(port))
}

func defaultModeSections(cfg *v1alpha1.KubeProxyConfiguration) {
	defaultPeriod(&cfg.IPTables.SyncPeriod, defaultSync)
	defaultPeriod(&cfg.IPTables.MinSyncPeriod, defaultMinSync)
	defaultPeriod(&cfg.IPVS.SyncPeriod, defaultSync) // ipvs minSyncPeriod stays 0, as in kube-proxy
	defaultPeriod(&cfg.NFTables.SyncPeriod, defaultSync)
	defaultPeriod(&cfg.NFTables.MinSyncPeriod, defaultMinSync)
	if cfg.IPTables.LocalhostNodePorts == nil {
		// kube-proxy's default is true; svcproxy's is false (CVE-2020-8558,
		// see the --iptables-localhost-nodeports help).
		cfg.IPTables.LocalhostNodePorts = ptr(false)
	}
	if cfg.IPTables.MasqueradeBit == nil {
		cfg.IPTables.MasqueradeBit = ptr[int32](defaultMasqBit)
	}
	if cfg.NFTables.MasqueradeBit == nil {
		cfg.NFTables.MasqueradeBit = ptr[int32](defaultMasqBit)
	}
	defaultPeriod(&cfg.ConfigSyncPeriod, 15*time.Minute)
}

func defaultPeriod(d *metav1.Duration, value time.Duration) {
	if d.Duration == 0 {
		d.Duration = value
	}
}

func defaultConntrack(c *v1alpha1.KubeProxyConntrackConfiguration) {
	if c.MaxPerCore == nil {
		c.MaxPerCore = ptr[int32](32 * 1024)
	}
	if c.Min == nil {
		c.Min = ptr[int32](128 * 1024)
	}
	if c.TCPEstablishedTimeout == nil {
		c.TCPEstablishedTimeout = &metav1.Duration{Duration: 24 * time.Hour}
	}
	if c.TCPCloseWaitTimeout == nil {
		c.TCPCloseWaitTimeout = &metav1.Duration{Duration: time.Hour}
	}
}

func defaultClient(cfg *v1alpha1.KubeProxyConfiguration) {
	c := &cfg.ClientConnection
	if c.ContentType == "" {
		c.ContentType = defaultProtobuf
	}
	if c.QPS == 0 {
		c.QPS = 5
	}
	if c.Burst == 0 {
		c.Burst = 10
	}
	if cfg.FeatureGates == nil {
		cfg.FeatureGates = map[string]bool{}
	}
}

func ptr[T any](v T) *T { return &v }
