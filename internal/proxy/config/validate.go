package config

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kube-proxy/config/v1alpha1"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/ipvs"
)

var root = field.NewPath("KubeProxyConfiguration")

// Validate applies kube-proxy v1.36's validation rules (validation.go) to a
// defaulted configuration and returns every violation, one per line, each
// naming its field path by the file's field names, e.g.
// "KubeProxyConfiguration.iptables.masqueradeBit: Invalid value: 32: must be
// within the range [0, 31]".
func Validate(cfg *v1alpha1.KubeProxyConfiguration) error {
	gates, err := FeatureGates(cfg)
	return errors.Join(err, validate(cfg, gates))
}

// validate is Validate with the feature gates already set (nil when they
// could not be).
func validate(cfg *v1alpha1.KubeProxyConfiguration, gates featuregate.FeatureGate) error {
	var errs field.ErrorList
	errs = append(errs, validateMasqueradeBit(cfg.IPTables.MasqueradeBit, root.Child("iptables", "masqueradeBit"))...)
	switch cfg.Mode {
	case ModeNFTables:
		errs = append(errs, validateMasqueradeBit(cfg.NFTables.MasqueradeBit, root.Child("nftables", "masqueradeBit"))...)
	case ModeIPVS:
		errs = append(errs, validateIPVS(&cfg.IPVS, root.Child("ipvs"))...)
	}
	errs = append(errs, validateMode(cfg.Mode)...)
	errs = append(errs, validatePeriods(cfg)...)
	errs = append(errs, validateConntrack(&cfg.Conntrack, root.Child("conntrack"))...)
	errs = append(errs, validateRange(cfg.OOMScoreAdj, -1000, 1000, root.Child("oomScoreAdj"))...)
	if cfg.ClientConnection.Burst < 0 {
		errs = append(errs, field.Invalid(root.Child("clientConnection", "burst"), cfg.ClientConnection.Burst, "must be greater than or equal to 0"))
	}
	errs = append(errs, validateAddresses(cfg)...)
	errs = append(errs, validateNodePortAddresses(cfg.NodePortAddresses, root.Child("nodePortAddresses"))...)
	errs = append(errs, validateDetectLocal(cfg)...)
	errs = append(errs, validateHiddenMetricsVersion(cfg.ShowHiddenMetricsForVersion)...)
	errs = append(errs, logsapi.Validate(&cfg.Logging, gates, root.Child("logging"))...)
	return joinFieldErrors(errs)
}

func supported(cfg *v1alpha1.KubeProxyConfiguration, gates featuregate.FeatureGate) error {
	var errs field.ErrorList
	switch {
	case cfg.Mode == ModeIPVS && cfg.IPVS.Scheduler != "" && !slices.Contains(ipvs.Schedulers, cfg.IPVS.Scheduler):
		errs = append(errs, field.NotSupported(root.Child("ipvs", "scheduler"), cfg.IPVS.Scheduler, ipvs.Schedulers))
	case cfg.Mode == ModeIPVS && cfg.IPTables.MasqueradeBit != nil && (*cfg.IPTables.MasqueradeBit < 1 || *cfg.IPTables.MasqueradeBit > 14):
		errs = append(errs, field.Invalid(root.Child("iptables", "masqueradeBit"), *cfg.IPTables.MasqueradeBit,
			"svcproxy's ipvs mode takes 1 to 14: it marks packets with the bits beside it and the upper 16 bits too"))
	case cfg.DetectLocalMode == "BridgeInterface" || cfg.DetectLocalMode == "InterfaceNamePrefix":
		errs = append(errs, field.Invalid(root.Child("detectLocalMode"), string(cfg.DetectLocalMode),
			`svcproxy tells pod traffic by address only; use "ClusterCIDR" or "NodeCIDR"`))
	}
	if cfg.Mode == "" && cfg.IPTables.LocalhostNodePorts != nil && *cfg.IPTables.LocalhostNodePorts {
		errs = append(errs, field.Invalid(root.Child("iptables", "localhostNodePorts"), true,
			`a blank mode runs svcproxy's nftables dataplane, which (like kube-proxy's nftables mode) never accepts NodePorts on 127.0.0.1; set mode "iptables" for localhost NodePorts`))
	}
	errs = append(errs, supportedGates(cfg, gates)...)
	return joinFieldErrors(errs)
}

func validateMode(mode v1alpha1.ProxyMode) field.ErrorList {
	switch mode {
	case "", ModeIPTables, ModeIPVS, ModeNFTables:
		return nil
	}
	return field.ErrorList{field.NotSupported(root.Child("mode"), string(mode), []string{"", "iptables", "ipvs", "nftables"})}
}

func validateMasqueradeBit(bit *int32, path *field.Path) field.ErrorList {
	return validateRange(bit, 0, 31, path)
}

func validateRange(v *int32, lo, hi int32, path *field.Path) field.ErrorList {
	if v == nil || (*v >= lo && *v <= hi) {
		return nil
	}
	return field.ErrorList{field.Invalid(path, *v, fmt.Sprintf("must be within the range [%d, %d]", lo, hi))}
}

// validatePeriods checks the sync periods of the section the mode reads.
func validatePeriods(cfg *v1alpha1.KubeProxyConfiguration) field.ErrorList {
	s := Resolve(cfg)
	section := root.Child(s.Section)
	var errs field.ErrorList
	if cfg.ConfigSyncPeriod.Duration <= 0 {
		errs = append(errs, field.Invalid(root.Child("configSyncPeriod"), cfg.ConfigSyncPeriod.Duration.String(), "must be greater than 0"))
	}
	if s.SyncPeriod <= 0 {
		errs = append(errs, field.Invalid(section.Child("syncPeriod"), s.SyncPeriod.String(), "must be greater than 0"))
	}
	if s.MinSyncPeriod < 0 {
		errs = append(errs, field.Invalid(section.Child("minSyncPeriod"), s.MinSyncPeriod.String(), "must be greater than or equal to 0"))
	}
	if s.MinSyncPeriod > s.SyncPeriod {
		errs = append(errs, field.Invalid(section.Child("minSyncPeriod"), s.MinSyncPeriod.String(),
			fmt.Sprintf("must be less than or equal to %s (%s)", section.Child("syncPeriod"), s.SyncPeriod)))
	}
	return errs
}

func validateIPVS(c *v1alpha1.KubeProxyIPVSConfiguration, path *field.Path) field.ErrorList {
	errs := nonNegative(path, map[string]metav1.Duration{
		"tcpTimeout": c.TCPTimeout, "tcpFinTimeout": c.TCPFinTimeout, "udpTimeout": c.UDPTimeout,
	})
	for i, cidr := range c.ExcludeCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			errs = append(errs, field.Invalid(path.Child("excludeCIDRs").Index(i), cidr, "must be a valid CIDR"))
		}
	}
	return errs
}

func validateConntrack(c *v1alpha1.KubeProxyConntrackConfiguration, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for name, v := range map[string]*int32{"maxPerCore": c.MaxPerCore, "min": c.Min} {
		if v != nil && *v < 0 {
			errs = append(errs, field.Invalid(path.Child(name), *v, "must be greater than or equal to 0"))
		}
	}
	durations := map[string]metav1.Duration{"udpTimeout": c.UDPTimeout, "udpStreamTimeout": c.UDPStreamTimeout}
	if c.TCPEstablishedTimeout != nil {
		durations["tcpEstablishedTimeout"] = *c.TCPEstablishedTimeout
	}
	if c.TCPCloseWaitTimeout != nil {
		durations["tcpCloseWaitTimeout"] = *c.TCPCloseWaitTimeout
	}
	return append(errs, nonNegative(path, durations)...)
}

// nonNegative checks durations by field name, in name order so the error
// text is stable.
func nonNegative(path *field.Path, durations map[string]metav1.Duration) field.ErrorList {
	var errs field.ErrorList
	for _, name := range sortedKeys(durations) {
		if d := durations[name].Duration; d < 0 {
			errs = append(errs, field.Invalid(path.Child(name), d.String(), "must be greater than or equal to 0"))
		}
	}
	return errs
}

func validateAddresses(cfg *v1alpha1.KubeProxyConfiguration) field.ErrorList {
	var errs field.ErrorList
	if net.ParseIP(cfg.BindAddress) == nil {
		errs = append(errs, field.Invalid(root.Child("bindAddress"), cfg.BindAddress, "must be an IP address"))
	}
	if cfg.HealthzBindAddress != "" { // empty: disabled by --healthz-port=0
		errs = append(errs, validateHostPort(cfg.HealthzBindAddress, root.Child("healthzBindAddress"))...)
	}
	return append(errs, validateHostPort(cfg.MetricsBindAddress, root.Child("metricsBindAddress"))...)
}

func validateHostPort(addr string, path *field.Path) field.ErrorList {
	if _, err := hostPort(addr); err != nil {
		return field.ErrorList{field.Invalid(path, addr, err.Error())}
	}
	return nil
}

// hostPort checks IP:port with a port in 1-65535 and returns the port.
func hostPort(addr string) (int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("must be IP:port")
	}
	if net.ParseIP(host) == nil {
		return 0, fmt.Errorf("must be IP:port with a valid IP")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("must be IP:port with a port in [1, 65535]")
	}
	return n, nil
}

func validateNodePortAddresses(addrs []string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, a := range addrs {
		if a == NodePortsPrimary {
			if len(addrs) != 1 {
				errs = append(errs, field.Invalid(path.Index(i), a, `"primary" must be the only value`))
			}
			continue
		}
		if _, _, err := net.ParseCIDR(a); err != nil {
			errs = append(errs, field.Invalid(path.Index(i), a, `must be a CIDR or "primary"`))
		}
	}
	return errs
}

// validateDetectLocal checks detectLocalMode and the setting that mode
// needs. kube-proxy does not require clusterCIDR in ClusterCIDR mode (it then
// treats no traffic as local); it only checks a given value.
func validateDetectLocal(cfg *v1alpha1.KubeProxyConfiguration) field.ErrorList {
	modes := []string{"ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"}
	switch cfg.DetectLocalMode {
	case "", "NodeCIDR":
		return nil
	case "ClusterCIDR":
		if cfg.ClusterCIDR == "" {
			return nil
		}
		_, err := ClusterCIDRs(cfg)
		if err != nil {
			return field.ErrorList{field.Invalid(root.Child("clusterCIDR"), cfg.ClusterCIDR, err.Error())}
		}
		return nil
	case "BridgeInterface":
		return requireNonEmpty(cfg.DetectLocal.BridgeInterface, root.Child("detectLocal", "bridgeInterface"))
	case "InterfaceNamePrefix":
		return requireNonEmpty(cfg.DetectLocal.InterfaceNamePrefix, root.Child("detectLocal", "interfaceNamePrefix"))
	}
	return field.ErrorList{field.NotSupported(root.Child("detectLocalMode"), string(cfg.DetectLocalMode), modes)}
}

func requireNonEmpty(v string, path *field.Path) field.ErrorList {
	if v != "" {
		return nil
	}
	return field.ErrorList{field.Required(path, "must be set for this detectLocalMode")}
}

// HiddenMetricsVersion is the one value showHiddenMetricsForVersion may
// have: the minor release before the kube-proxy release svcproxy follows
// (v1.36), as kube-proxy allows only the previous minor version.
const HiddenMetricsVersion = "1.35"

// validateHiddenMetricsVersion applies kube-proxy's rule and message.
func validateHiddenMetricsVersion(v string) field.ErrorList {
	if v == "" || v == HiddenMetricsVersion {
		return nil
	}
	return field.ErrorList{field.Invalid(root.Child("showHiddenMetricsForVersion"), v,
		fmt.Sprintf("must be omitted or have the value '%s'; only the previous minor version is allowed", HiddenMetricsVersion))}
}
