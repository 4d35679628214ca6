package config

//go:generate sh -c "../../../hack/featuregates/gen.sh > kubegates.go.tmp && mv kubegates.go.tmp kubegates.go"

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/component-base/featuregate"
	"k8s.io/kube-proxy/config/v1alpha1"
)

// A gateRule says what svcproxy does about one feature gate that changes
// what kube-proxy v1.36 does on Linux (pkg/proxy and cmd/kube-proxy read
// these gates; every other gate in kubeProxyGates has no effect on
// kube-proxy, nor on svcproxy).
type gateRule struct {
	// implements lists the values svcproxy behaves as; a gate asked for
	// another value is refused with why.
	implements []bool
	why        string
	// windows gates change only kube-proxy's Windows dataplane: accepted,
	// with a warning that they have no effect on Linux.
	windows bool
}

// gateRules are the gates that change kube-proxy's behaviour. The logging
// gates (LoggingAlphaOptions, LoggingBetaOptions, ContextualLogging) and
// client-go's (WatchListClient, ...) are not here: the logging
// configuration and client-go read them, as in kube-proxy.
var gateRules = map[featuregate.Feature]gateRule{
	"AllowServiceExternalIPs": {implements: []bool{true},
		why: "svcproxy always programs a Service's externalIPs; to refuse them, use the DenyServiceExternalIPs admission plugin"},
	"PreferSameTrafficDistribution": {implements: []bool{true},
		why: "svcproxy always honours trafficDistribution PreferSameNode"},
	"MultiCIDRServiceAllocator": {implements: []bool{false},
		why: "svcproxy does not watch ServiceCIDRs, so in nftables mode it does not drop traffic to unallocated ClusterIPs as kube-proxy does with this gate (on by default; see docs/flags.md)"},
	"NFTablesProxyMode": {implements: []bool{true}, why: "svcproxy's nftables mode is always there"},
	"ComponentFlagz": {implements: []bool{false},
		why: "svcproxy's metrics server does not serve /flagz (kube-proxy does by default; see docs/flags.md)"},
	"ComponentStatusz": {implements: []bool{false},
		why: "svcproxy's metrics server does not serve /statusz (kube-proxy does by default; see docs/flags.md)"},
	"NativeHistograms": {implements: []bool{false},
		why: "svcproxy exposes classic Prometheus histograms only"},
	"WinDSR":     {windows: true},
	"WinOverlay": {windows: true},
}

// loggingGates are read by the logging configuration (component-base's
// logs/api/v1), as kube-proxy's are.
var loggingGates = []featuregate.Feature{"LoggingAlphaOptions", "LoggingBetaOptions", "ContextualLogging"}

// ClientGoGates lets client-go read the configuration's feature gates, as
// kube-proxy's does: --feature-gates=WatchListClient=false reaches the
// informers. Install it with client-go's features.ReplaceFeatureGates
// before the first client is made.
func ClientGoGates(g featuregate.FeatureGate) clientfeatures.Gates { return clientGates{g} }

type clientGates struct{ gates featuregate.FeatureGate }

func (c clientGates) Enabled(f clientfeatures.Feature) bool {
	return c.gates.Enabled(featuregate.Feature(f))
}

// clientGoGates are the names of the gates client-go reads.
func clientGoGates() map[string]bool {
	names := gateNames{}
	_ = clientfeatures.AddFeaturesToExistingFeatureGates(names)
	return names
}

// gateNames is a client-go feature registry that keeps only the names.
type gateNames map[string]bool

func (n gateNames) Add(specs map[clientfeatures.Feature]clientfeatures.FeatureSpec) error {
	for f := range specs {
		n[string(f)] = true
	}
	return nil
}

// newGates returns kube-proxy v1.36's feature gates, unset.
func newGates() featuregate.MutableFeatureGate {
	g := featuregate.NewFeatureGate()
	if err := g.Add(kubeProxyGates); err != nil {
		panic(fmt.Sprintf("kube-proxy's feature gates: %v", err)) // a bad generated table
	}
	return g
}

// FeatureGates sets kube-proxy's feature gates from cfg.featureGates as
// kube-proxy does: an unknown gate, or a locked one set against its lock,
// is an error naming it.
func FeatureGates(cfg *v1alpha1.KubeProxyConfiguration) (featuregate.FeatureGate, error) {
	g := newGates()
	if err := g.SetFromMap(cfg.FeatureGates); err != nil {
		return nil, field.Invalid(root.Child("featureGates"), cfg.FeatureGates, err.Error())
	}
	return g, nil
}

// supportedGates refuses the gates that ask for behaviour svcproxy does
// not have: set explicitly to such a value, or moved to one from the
// default (by AllAlpha or AllBeta).
func supportedGates(cfg *v1alpha1.KubeProxyConfiguration, g featuregate.FeatureGate) field.ErrorList {
	var errs field.ErrorList
	for _, f := range sortedKeys(gateRules) {
		rule, name := gateRules[f], string(f)
		if rule.windows {
			continue
		}
		_, explicit := cfg.FeatureGates[name]
		on := g.Enabled(f)
		if (explicit || on != kubeProxyGates[f].Default) && !slices.Contains(rule.implements, on) {
			errs = append(errs, field.Invalid(root.Child("featureGates").Key(name), on, rule.why))
		}
	}
	return errs
}

// GateNotes are the warnings worth logging at start about the gates that
// were set: those with no effect on a Linux Service proxy.
func GateNotes(cfg *v1alpha1.KubeProxyConfiguration) []string {
	var notes []string
	client := clientGoGates()
	for _, name := range sortedKeys(cfg.FeatureGates) {
		f := featuregate.Feature(name)
		rule, proxy := gateRules[f]
		switch {
		case rule.windows:
			notes = append(notes, fmt.Sprintf("feature gate %s changes only kube-proxy's Windows dataplane: no effect on Linux, as in kube-proxy", name))
		case !proxy && !slices.Contains(loggingGates, f) && !client[name] && name != "AllAlpha" && name != "AllBeta":
			notes = append(notes, fmt.Sprintf("feature gate %s does not concern a Service proxy: no effect, as in kube-proxy", name))
		}
	}
	return notes
}
