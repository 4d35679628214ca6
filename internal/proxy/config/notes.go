package config

import (
	"fmt"

	"k8s.io/kube-proxy/config/v1alpha1"
)

// StartNotes are what svcproxy says once at start about its configuration:
// settings that have no effect (where kube-proxy ignores them too) and
// defaults that differ from kube-proxy's. opts must come from Parse.
func StartNotes(opts *Options) []string {
	cfg := opts.Config
	notes := append([]string(nil), opts.Warnings...)
	notes = append(notes, GateNotes(cfg)...)
	notes = append(notes, localhostNote(cfg)...)
	if cfg.ShowHiddenMetricsForVersion != "" {
		notes = append(notes, fmt.Sprintf("showHiddenMetricsForVersion %s: svcproxy hides no metric (nor does kube-proxy v1.36 hide any of its own), so every metric shows either way", cfg.ShowHiddenMetricsForVersion))
	}
	if cfg.Winkernel != (v1alpha1.KubeProxyWinkernelConfiguration{}) || cfg.WindowsRunAsService {
		notes = append(notes, "winkernel and windowsRunAsService configure kube-proxy on Windows: no effect on Linux, as in kube-proxy")
	}
	if cfg.PortRange != "" {
		notes = append(notes, "portRange configured the userspace mode, removed from kube-proxy in v1.26: no effect, as in kube-proxy")
	}
	return notes
}

// localhostNote says where svcproxy's localhost NodePorts differ from
// kube-proxy's: off by default in iptables mode (kube-proxy: on), and never
// in nftables mode whatever iptables.localhostNodePorts says.
func localhostNote(cfg *v1alpha1.KubeProxyConfiguration) []string {
	on := cfg.IPTables.LocalhostNodePorts != nil && *cfg.IPTables.LocalhostNodePorts
	switch {
	case cfg.Mode == ModeNFTables && on:
		return []string{"iptables.localhostNodePorts (--iptables-localhost-nodeports) has no effect in nftables mode: NodePorts never answer on 127.0.0.1 there, as in kube-proxy"}
	case cfg.Mode != ModeNFTables && !on:
		return []string{"iptables.localhostNodePorts (--iptables-localhost-nodeports) is false, svcproxy's default, where kube-proxy's is true: NodePorts do not answer on 127.0.0.1 (CVE-2020-8558)"}
	}
	return nil
}
