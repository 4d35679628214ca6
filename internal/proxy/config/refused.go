package config

import "github.com/spf13/pflag"

// refusedFlagReasons lists kube-proxy flags, past or platform-specific, that
// svcproxy recognises so it can say why it will not honour them.
var refusedFlagReasons = map[string]string{
	"proxy-port-range":        "it configured the userspace mode, removed from kube-proxy in v1.26",
	"udp-timeout":             "it configured the userspace mode, removed from kube-proxy in v1.26",
	"resource-container":      "it was removed from kube-proxy in v1.16; run svcproxy in the cgroup you want",
	"windows-service":         "it is a Windows-only flag and svcproxy runs on Linux",
	"source-vip":              "it is a Windows (winkernel) flag and svcproxy runs on Linux",
	"network-name":            "it is a Windows (winkernel) flag and svcproxy runs on Linux",
	"enable-dsr":              "it is a Windows (winkernel) flag and svcproxy runs on Linux",
	"root-hns-endpoint-name":  "it is a Windows (winkernel) flag and svcproxy runs on Linux",
	"forward-healthcheck-vip": "it is a Windows (winkernel) flag and svcproxy runs on Linux",
	"logtostderr":             "klog's file flags were removed from Kubernetes components in v1.26; svcproxy logs to stderr",
	"alsologtostderr":         "klog's file flags were removed from Kubernetes components in v1.26; svcproxy logs to stderr",
	"log-dir":                 "klog's file flags were removed from Kubernetes components in v1.26; svcproxy logs to stderr",
	"log-file":                "klog's file flags were removed from Kubernetes components in v1.26; svcproxy logs to stderr",
}

// noEffectFlags are flags kube-proxy's command line carries without using
// them: accepted, hidden from the help, and said at start to do nothing.
var noEffectFlags = map[string]string{
	"boot-id-file":    "cAdvisor's flag, which kube-proxy's command line carries but never reads",
	"machine-id-file": "cAdvisor's flag, which kube-proxy's command line carries but never reads",
}

// noEffect registers the no-effect flags, hidden from the help text.
func noEffect() *pflag.FlagSet {
	s := newSet()
	for name, why := range noEffectFlags {
		s.String(name, "", why)
		_ = s.MarkHidden(name)
	}
	return s
}

// noEffectWarnings says which no-effect flags were given.
func noEffectWarnings(set *pflag.FlagSet) []string {
	var out []string
	set.Visit(func(f *pflag.Flag) {
		if why, ok := noEffectFlags[f.Name]; ok {
			out = append(out, "flag --"+f.Name+" has no effect: "+why+"; as in kube-proxy")
		}
	})
	return out
}

// refusedFlags registers the refused flags, hidden from the help text; any
// use of one fails with its reason.
func refusedFlags() *pflag.FlagSet {
	s := newSet()
	for name, reason := range refusedFlagReasons {
		fl := s.VarPF(&refusedValue{name: name, reason: reason}, name, "", reason)
		fl.NoOptDefVal = "true"
		fl.Hidden = true
	}
	return s
}

// refusedValue fails on every Set with the flag's reason.
type refusedValue struct{ name, reason string }

func (v *refusedValue) String() string { return "" }
func (v *refusedValue) Type() string   { return "refused" }
func (v *refusedValue) Set(string) error {
	return &refusedFlagError{name: v.name, reason: v.reason}
}
