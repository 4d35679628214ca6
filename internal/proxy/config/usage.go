package config

import (
	"fmt"
	"io"
)

// usageIntro explains how flags and --config combine, as in kube-proxy v1.36.
const usageIntro = `Usage: svcproxy [flags]

svcproxy is a drop-in kube-proxy: it takes kube-proxy's flags and its
--config file (kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration).

How flags and --config combine (as in kube-proxy v1.36):
  - With --config, the file is the whole configuration. Only --hostname-override
    (which wins over the file's hostnameOverride), the logging flags (-v,
    --vmodule, ...), --master, --cleanup, --init-only and --write-config-to
    still apply. Any other flag is ignored with a warning; set it in the file.
  - Without --config, the flags are the configuration, with kube-proxy's defaults.
  - --iptables-sync-period and --iptables-min-sync-period apply to every mode but
    ipvs; --ipvs-sync-period and --ipvs-min-sync-period only to ipvs.
  - A blank mode runs svcproxy's nftables dataplane but keeps kube-proxy's
    blank-mode settings: periods and masquerading from the iptables section,
    NodePorts on all local IPs (but never on 127.0.0.1). mode "nftables" reads
    the nftables section and defaults nodePortAddresses to "primary". mode
    "ipvs" runs IPVS virtual servers with kube-proxy's ipset and iptables glue.
  - Where svcproxy differs from kube-proxy, and what it does with each flag and
    field: docs/flags.md.
  - The file is decoded strictly: unknown or duplicate fields are errors.
`

// Usage writes the help text: how flags and the config file combine, then
// the flags by group with their defaults.
func Usage(w io.Writer) {
	fmt.Fprint(w, usageIntro)
	for _, g := range newFlags().groups {
		fmt.Fprintf(w, "\n%s:\n%s", g.title, g.set.FlagUsagesWrapped(100))
	}
}
