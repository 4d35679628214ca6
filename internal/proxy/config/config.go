// Package config reads svcproxy's command line and kube-proxy's
// KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1), so that
// svcproxy can replace the kube-proxy image in an existing DaemonSet without
// changing its arguments or its --config file. It owns flag parsing, strict
// file decoding, kube-proxy's defaults and kube-proxy's validation rules.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/component-base/featuregate"
	"k8s.io/kube-proxy/config/v1alpha1"
)

// The proxy modes kube-proxy knows on Linux.
const (
	ModeIPTables v1alpha1.ProxyMode = "iptables"
	ModeIPVS     v1alpha1.ProxyMode = "ipvs"
	ModeNFTables v1alpha1.ProxyMode = "nftables"
)

// Options is the result of parsing a kube-proxy style command line.
type Options struct {
	Config        *v1alpha1.KubeProxyConfiguration // defaulted and validated
	ConfigFile    string                           // --config
	WriteConfigTo string                           // --write-config-to: write Config there and exit
	Master        string                           // --master: overrides the kubeconfig's server URL
	Manifests     string                           // --manifests: standalone source directory
	Netns         string                           // --netns: the named network namespace to program
	Cleanup       bool                             // --cleanup: remove svcproxy's rules and exit
	InitOnly      bool                             // --init-only: do privileged setup and exit
	Version       bool                             // --version: print version and exit
	Help          bool                             // --help: usage was requested
	Proxy         Settings                         // the mode and the settings of its section
	Warnings      []string                         // flags that were given but have no effect
	// Gates are kube-proxy's feature gates as the configuration sets them.
	Gates featuregate.FeatureGate
	// Flags are every flag and its value, which kube-proxy logs at -v=1.
	Flags []Flag
}

// Flag is one flag and its value, as given or by default.
type Flag struct{ Name, Value string }

// Settings are the values the selected mode's section of the config
// supplies, resolved the way kube-proxy resolves them.
type Settings struct {
	// Mode is the dataplane to run: "nftables", "iptables" or "ipvs",
	// never "".
	Mode v1alpha1.ProxyMode
	// Section is the config section the values below come from: a blank
	// mode reads "iptables", as kube-proxy does.
	Section       string
	SyncPeriod    time.Duration
	MinSyncPeriod time.Duration
	MasqueradeAll bool
	MasqueradeBit int32
	// LocalhostNodePorts is iptables.localhostNodePorts where it applies:
	// in iptables mode only, as in kube-proxy.
	LocalhostNodePorts bool
	// Scheduler is ipvs.scheduler in ipvs mode ("" for the dataplane's
	// default, rr), "" in the others.
	Scheduler string
}

// Parse reads kube-proxy's flags (and svcproxy's additions) from args, loads
// --config if given, applies kube-proxy's defaults and validates the result.
// Errors name the flag or the config field at fault.
func Parse(args []string) (*Options, error) {
	fl := newFlags()
	if err := fl.set.Parse(args); err != nil {
		return nil, flagError(err)
	}
	if rest := fl.set.Args(); len(rest) > 0 {
		return nil, fmt.Errorf("svcproxy takes no positional arguments, got %q", rest)
	}
	opts := fl.options()
	if opts.Help || opts.Version {
		return opts, nil
	}
	cfg, err := fl.config(opts)
	if err != nil {
		return nil, err
	}
	if opts.ConfigFile != "" {
		Default(cfg)
	} else {
		platformDefaults(cfg) // the flags' defaults were applied before parsing
	}
	gates, err := FeatureGates(cfg)
	errs := []error{err, validate(cfg, gates)}
	if !opts.Cleanup && gates != nil {
		errs = append(errs, supported(cfg, gates))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	opts.Warnings = append(opts.Warnings, noEffectWarnings(fl.set)...)
	opts.Config = cfg
	opts.Proxy = Resolve(cfg)
	opts.Gates = gates
	fl.set.VisitAll(func(f *pflag.Flag) {
		if f.Hidden { // the refused flags
			return
		}
		opts.Flags = append(opts.Flags, Flag{f.Name, f.Value.String()})
	})
	return opts, nil
}

// flagError turns pflag's errors into messages that point at --help and
// explain the flags svcproxy knows but refuses.
func flagError(err error) error {
	var refused *refusedFlagError
	if errors.As(err, &refused) {
		return refused
	}
	if strings.HasPrefix(err.Error(), "unknown") {
		return fmt.Errorf("%w (svcproxy takes kube-proxy's flags; see --help)", err)
	}
	return err
}

// Resolve returns the mode svcproxy runs and the settings of the config
// section that mode reads: a blank mode runs nftables but, like kube-proxy's
// blank mode, takes its periods and masquerading from the iptables section.
func Resolve(cfg *v1alpha1.KubeProxyConfiguration) Settings {
	s := Settings{Mode: cfg.Mode, Section: "iptables", MasqueradeBit: deref(cfg.IPTables.MasqueradeBit, 14)}
	switch cfg.Mode {
	case ModeNFTables:
		s.Section = "nftables"
		s.SyncPeriod, s.MinSyncPeriod = cfg.NFTables.SyncPeriod.Duration, cfg.NFTables.MinSyncPeriod.Duration
		s.MasqueradeAll, s.MasqueradeBit = cfg.NFTables.MasqueradeAll, deref(cfg.NFTables.MasqueradeBit, 14)
		return s
	case ModeIPVS:
		s.Section = "ipvs"
		s.SyncPeriod, s.MinSyncPeriod = cfg.IPVS.SyncPeriod.Duration, cfg.IPVS.MinSyncPeriod.Duration
		s.Scheduler = cfg.IPVS.Scheduler
	default:
		s.SyncPeriod, s.MinSyncPeriod = cfg.IPTables.SyncPeriod.Duration, cfg.IPTables.MinSyncPeriod.Duration
	}
	s.MasqueradeAll = cfg.IPTables.MasqueradeAll
	s.LocalhostNodePorts = s.Mode == ModeIPTables && cfg.IPTables.LocalhostNodePorts != nil && *cfg.IPTables.LocalhostNodePorts
	if s.Mode == "" {
		s.Mode = ModeNFTables
	}
	return s
}

func deref(p *int32, fallback int32) int32 {
	if p == nil {
		return fallback
	}
	return *p
}

// refusedFlagError is a kube-proxy flag that svcproxy recognises but does not
// implement.
type refusedFlagError struct {
	name, reason string
}

func (e *refusedFlagError) Error() string {
	return fmt.Sprintf("flag --%s is a kube-proxy flag that svcproxy does not implement: %s", e.name, e.reason)
}

var _ pflag.Value = (*refusedValue)(nil)
