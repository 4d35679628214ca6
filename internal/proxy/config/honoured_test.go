package config

import (
	"slices"
	"strings"
	"testing"

	logsapi "k8s.io/component-base/logs/api/v1"
)

// TestFeatureGates: gates are kube-proxy v1.36's. An unknown one, or a
// locked one set against its lock, is refused as kube-proxy refuses it; a
// gate asking for what svcproxy does not do is refused naming it and why,
// also when AllAlpha turns it on; the rest are accepted, the ones that do
// not concern a Service proxy with a note.
func TestFeatureGates(t *testing.T) {
	refused := []struct{ gates, want string }{
		{"NoSuchGate=true", `KubeProxyConfiguration.featureGates: Invalid value: {"NoSuchGate":true}: unrecognized feature gate: NoSuchGate`},
		{"PreferSameTrafficDistribution=false", "cannot set feature gate PreferSameTrafficDistribution to false, feature is locked to true"},
		{"ComponentFlagz=true", "KubeProxyConfiguration.featureGates[ComponentFlagz]: Invalid value: true: svcproxy's metrics server does not serve /flagz"},
		{"ComponentStatusz=true", "featureGates[ComponentStatusz]: Invalid value: true: svcproxy's metrics server does not serve /statusz"},
		{"AllowServiceExternalIPs=false", "featureGates[AllowServiceExternalIPs]: Invalid value: false: svcproxy always programs a Service's externalIPs"},
		{"MultiCIDRServiceAllocator=true", "featureGates[MultiCIDRServiceAllocator]: Invalid value: true: svcproxy does not watch ServiceCIDRs"},
		{"NativeHistograms=true", "featureGates[NativeHistograms]: Invalid value: true: svcproxy exposes classic Prometheus histograms only"},
		{"AllAlpha=true", "featureGates[NativeHistograms]: Invalid value: true"},
	}
	for _, tt := range refused {
		_, err := Parse([]string{"--feature-gates=" + tt.gates})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("--feature-gates=%s: %v, want an error containing %q", tt.gates, err, tt.want)
		}
	}
	accepted := []struct{ gates, note string }{
		{"ComponentFlagz=false,ComponentStatusz=false", ""},
		{"AllowServiceExternalIPs=true,PreferSameTrafficDistribution=true,NFTablesProxyMode=true", ""},
		{"LoggingBetaOptions=false,ContextualLogging=false", ""},
		{"WatchListClient=false,InOrderInformersBatchProcess=false", ""}, // client-go reads them
		{"WinDSR=true", "feature gate WinDSR changes only kube-proxy's Windows dataplane: no effect on Linux"},
		{"APIResponseCompression=false", "feature gate APIResponseCompression does not concern a Service proxy: no effect, as in kube-proxy"},
	}
	for _, tt := range accepted {
		opts, err := Parse([]string{"--feature-gates=" + tt.gates})
		if err != nil {
			t.Errorf("--feature-gates=%s: %v", tt.gates, err)
			continue
		}
		notes := strings.Join(StartNotes(opts), "\n")
		if tt.note != "" && !strings.Contains(notes, tt.note) || tt.note == "" && strings.Contains(notes, "feature gate") {
			t.Errorf("--feature-gates=%s: notes %q, want %q", tt.gates, notes, tt.note)
		}
	}
	opts, err := Parse([]string{"--feature-gates=WatchListClient=false"})
	if err != nil || ClientGoGates(opts.Gates).Enabled("WatchListClient") || !ClientGoGates(opts.Gates).Enabled("InOrderInformersBatchProcess") {
		t.Errorf("client-go does not read the gates as set: %v", err)
	}
	opts, err = Parse([]string{"--config=" + writeFile(t, header+"featureGates:\n  LoggingBetaOptions: false\n")})
	if err != nil || opts.Gates.Enabled("LoggingBetaOptions") {
		t.Errorf("featureGates in the file: %v, LoggingBetaOptions still on", err)
	}
}

// TestHonouredSettings: the settings that used to be accepted and ignored
// now resolve to what svcproxy does with them.
func TestHonouredSettings(t *testing.T) {
	opts, err := Parse([]string{"-v=4", "--vmodule=agent=6", "--oom-score-adj=-500",
		"--bind-address-hard-fail", "--show-hidden-metrics-for-version=1.35", "--proxy-mode=iptables", "--iptables-localhost-nodeports"})
	if err != nil {
		t.Fatal(err)
	}
	c := opts.Config
	want(t, "verbosity", int(c.Logging.Verbosity), 4)
	want(t, "vmodule", logsapi.VModuleConfigurationPflag(&c.Logging.VModule).String(), "agent=6")
	want(t, "oomScoreAdj", *c.OOMScoreAdj, int32(-500))
	want(t, "bindAddressHardFail", c.BindAddressHardFail, true)
	want(t, "localhost NodePorts", opts.Proxy.LocalhostNodePorts, true)
	if notes := strings.Join(StartNotes(opts), "\n"); !strings.Contains(notes, "showHiddenMetricsForVersion 1.35: svcproxy hides no metric") {
		t.Errorf("notes %q lack what showHiddenMetricsForVersion does", notes)
	}
	if !slices.Contains(opts.Flags, Flag{"iptables-localhost-nodeports", "true"}) {
		t.Errorf("Flags %q lack the flags as given", opts.Flags)
	}
}

// TestLoggingFormat: json as kube-proxy has it (--vmodule is text only).
func TestLoggingFormat(t *testing.T) {
	opts, err := Parse([]string{"--logging-format=json", "-v=2"})
	if err != nil {
		t.Fatal(err)
	}
	want(t, "format", opts.Config.Logging.Format, "json")
	_, err = Parse([]string{"--logging-format=json", "--vmodule=agent=4"})
	if err == nil || !strings.Contains(err.Error(), "KubeProxyConfiguration.logging.vmodule: Forbidden: Only supported for text log format") {
		t.Errorf("json with vmodule: %v", err)
	}
	_, err = Parse([]string{"--logging-format=xml"})
	if err == nil || !strings.Contains(err.Error(), `KubeProxyConfiguration.logging.format: Invalid value: "xml": Unsupported log format`) {
		t.Errorf("xml: %v", err)
	}
}

// TestShowHiddenMetricsForVersion: kube-proxy v1.36 allows only 1.35.
func TestShowHiddenMetricsForVersion(t *testing.T) {
	for _, v := range []string{"1.34", "1.36", "v1.35", "1"} {
		_, err := Parse([]string{"--show-hidden-metrics-for-version=" + v})
		wantErr := `KubeProxyConfiguration.showHiddenMetricsForVersion: Invalid value: "` + v + `": must be omitted or have the value '1.35'; only the previous minor version is allowed`
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: %v, want %q", v, err, wantErr)
		}
	}
}

// TestLocalhostNodePorts: svcproxy's default is false (kube-proxy's true)
// and start-up says so; true takes effect in iptables mode, is refused in a
// blank mode (which runs nftables) and has no effect in nftables mode, as
// in kube-proxy, which start-up says too.
func TestLocalhostNodePorts(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		on      bool
		refused string
		note    string
	}{
		{args: []string{"--proxy-mode=iptables"}, note: "is false, svcproxy's default, where kube-proxy's is true"},
		{args: nil, note: "is false, svcproxy's default, where kube-proxy's is true"},
		{args: []string{"--proxy-mode=nftables"}},
		{args: []string{"--proxy-mode=iptables", "--iptables-localhost-nodeports"}, on: true},
		{args: []string{"--iptables-localhost-nodeports"}, refused: `KubeProxyConfiguration.iptables.localhostNodePorts: Invalid value: true: a blank mode runs svcproxy's nftables dataplane`},
		{args: []string{"--proxy-mode=nftables", "--iptables-localhost-nodeports"}, note: "has no effect in nftables mode"},
		{args: []string{"--config=" + writeFile(t, header+"mode: iptables\niptables:\n  localhostNodePorts: true\n")}, on: true},
		{args: []string{"--config=" + writeFile(t, header+"mode: iptables\n")}, note: "is false, svcproxy's default"},
	} {
		opts, err := Parse(tt.args)
		if tt.refused != "" {
			if err == nil || !strings.Contains(err.Error(), tt.refused) {
				t.Errorf("%q: %v, want it refused: %s", tt.args, err, tt.refused)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		want(t, strings.Join(tt.args, " ")+": localhost NodePorts", opts.Proxy.LocalhostNodePorts, tt.on)
		notes := strings.Join(StartNotes(opts), "\n")
		if tt.note != "" && !strings.Contains(notes, tt.note) || tt.note == "" && strings.Contains(notes, "localhostNodePorts") {
			t.Errorf("%q: notes %q, want %q", tt.args, notes, tt.note)
		}
	}
}

// TestWindowsAndRemovedFieldsAreNoted: fields kube-proxy ignores on Linux
// are accepted with a note saying so.
func TestWindowsAndRemovedFieldsAreNoted(t *testing.T) {
	opts, err := Parse([]string{"--config=" + writeFile(t, header+"winkernel:\n  enableDSR: true\nportRange: 30000-32767\n")})
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(StartNotes(opts), "\n")
	for _, w := range []string{"winkernel and windowsRunAsService configure kube-proxy on Windows", "portRange configured the userspace mode"} {
		if !strings.Contains(notes, w) {
			t.Errorf("notes %q lack %q", notes, w)
		}
	}
}
