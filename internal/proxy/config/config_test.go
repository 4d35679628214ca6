package config

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/kube-proxy/config/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite golden files")

// writeFile writes a config file body into a temporary directory.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.conf")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const header = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"

func TestParseCommandLines(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, o *Options)
	}{{
		name: "kubeadm DaemonSet",
		args: []string{"--config=testdata/kubeadm.yaml", "--hostname-override= Worker-1 "},
		check: func(t *testing.T, o *Options) {
			c := o.Config
			want(t, "hostnameOverride", c.HostnameOverride, "worker-1")
			want(t, "kubeconfig", c.ClientConnection.Kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf")
			want(t, "mode", o.Proxy, Settings{Mode: ModeNFTables, Section: "iptables", SyncPeriod: 30 * time.Second, MinSyncPeriod: time.Second, MasqueradeBit: 14})
			want(t, "nodePortAddresses", len(c.NodePortAddresses), 0)
			want(t, "healthz", c.HealthzBindAddress, "0.0.0.0:10256")
			want(t, "metrics", c.MetricsBindAddress, "127.0.0.1:10249")
			want(t, "maxPerCore", *c.Conntrack.MaxPerCore, int32(32768))
			want(t, "min", *c.Conntrack.Min, int32(131072))
			want(t, "detectLocalMode", c.DetectLocalMode, v1alpha1.LocalMode("ClusterCIDR"))
			want(t, "configSyncPeriod", c.ConfigSyncPeriod.Duration, 15*time.Minute)
			want(t, "warnings", len(o.Warnings), 0)
		},
	}, {
		name: "kind: iptables, maxPerCore 0, dual stack, -v over the file",
		args: []string{"--config", "testdata/kind.yaml", "--hostname-override=kind-worker", "-v=4"},
		check: func(t *testing.T, o *Options) {
			want(t, "maxPerCore", *o.Config.Conntrack.MaxPerCore, int32(0))
			want(t, "tcpBeLiberal", o.Config.Conntrack.TCPBeLiberal, true)
			want(t, "mode", o.Proxy.Mode, ModeIPTables)
			want(t, "verbosity", int(o.Config.Logging.Verbosity), 4)
			cidrs, err := ClusterCIDRs(o.Config)
			want(t, "cidrs", err, error(nil))
			want(t, "cidrs", len(cidrs), 2)
		},
	}, {
		name: "nftables JSON file",
		args: []string{"--config=testdata/nftables.json"},
		check: func(t *testing.T, o *Options) {
			want(t, "settings", o.Proxy, Settings{Mode: ModeNFTables, Section: "nftables", SyncPeriod: time.Minute, MinSyncPeriod: 2 * time.Second, MasqueradeAll: true, MasqueradeBit: 14})
			want(t, "nodePortAddresses", strings.Join(o.Config.NodePortAddresses, ","), "primary")
			want(t, "verbosity", int(o.Config.Logging.Verbosity), 2)
		},
	}, {
		name: "flags only",
		args: []string{"--kubeconfig=/etc/kubernetes/proxy.conf", "--proxy-mode=nftables", "--cluster-cidr=10.244.0.0/16",
			"--hostname-override=Node-A", "--conntrack-max-per-core=0", "--masquerade-all", "--iptables-sync-period=10s",
			"--iptables-min-sync-period=0", "--nodeport-addresses=192.0.2.0/24", "--healthz-bind-address=0.0.0.0", "-v", "3",
			"--iptables-masquerade-bit=15", "--manifests=/srv/manifests"},
		check: func(t *testing.T, o *Options) {
			c := o.Config
			want(t, "settings", o.Proxy, Settings{Mode: ModeNFTables, Section: "nftables", SyncPeriod: 10 * time.Second, MasqueradeAll: true, MasqueradeBit: 14})
			want(t, "iptables masqueradeBit", *c.IPTables.MasqueradeBit, int32(15))
			want(t, "kubeconfig", c.ClientConnection.Kubeconfig, "/etc/kubernetes/proxy.conf")
			want(t, "hostname", c.HostnameOverride, "node-a")
			want(t, "healthz", c.HealthzBindAddress, "0.0.0.0:10256")
			want(t, "nodePortAddresses", strings.Join(c.NodePortAddresses, ","), "192.0.2.0/24")
			want(t, "maxPerCore", *c.Conntrack.MaxPerCore, int32(0))
			want(t, "verbosity", int(o.Config.Logging.Verbosity), 3)
			want(t, "manifests", o.Manifests, "/srv/manifests")
		},
	}, {
		name: "ipvs sync flags apply only to ipvs; the scheduler reaches the settings",
		args: []string{"--proxy-mode=ipvs", "--ipvs-sync-period=5s", "--iptables-sync-period=7s", "--ipvs-scheduler=sh"},
		check: func(t *testing.T, o *Options) {
			want(t, "mode", o.Proxy.Mode, ModeIPVS)
			want(t, "scheduler", o.Proxy.Scheduler, "sh")
			want(t, "sync period", o.Proxy.SyncPeriod, 5*time.Second)
			want(t, "ipvs sync", o.Config.IPVS.SyncPeriod.Duration, 5*time.Second)
			want(t, "ipvs minSync (flag default)", o.Config.IPVS.MinSyncPeriod.Duration, time.Second)
			want(t, "iptables sync", o.Config.IPTables.SyncPeriod.Duration, 30*time.Second)
		},
	}, {
		name: "flags beside --config are ignored with a warning",
		args: []string{"--config=testdata/kind.yaml", "--masquerade-all", "--master=https://192.0.2.1:6443"},
		check: func(t *testing.T, o *Options) {
			want(t, "masqueradeAll", o.Proxy.MasqueradeAll, false)
			want(t, "master", o.Master, "https://192.0.2.1:6443")
			want(t, "warnings", strings.Join(o.Warnings, "\n"),
				"flag --masquerade-all is ignored because --config is given (as in kube-proxy); set it in the file")
		},
	}, {
		name: "deprecated --healthz-port=0 disables the health server",
		args: []string{"--healthz-port=0"},
		check: func(t *testing.T, o *Options) {
			want(t, "healthz", o.Config.HealthzBindAddress, "")
		},
	}, {
		name:  "help",
		args:  []string{"-h", "--proxy-mode=bogus"},
		check: func(t *testing.T, o *Options) { want(t, "help", o.Help, true) },
	}, {
		name:  "version",
		args:  []string{"--version"},
		check: func(t *testing.T, o *Options) { want(t, "version", o.Version, true) },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Parse(tt.args)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, o)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		body string // config file, passed as --config when set
		want string
	}{{
		name: "unknown flag",
		args: []string{"--proxy-mod=iptables"},
		want: "unknown flag: --proxy-mod (svcproxy takes kube-proxy's flags; see --help)",
	}, {
		name: "refused userspace flag",
		args: []string{"--proxy-port-range=30000-32767"},
		want: "flag --proxy-port-range is a kube-proxy flag that svcproxy does not implement: it configured the userspace mode, removed from kube-proxy in v1.26",
	}, {
		name: "refused bare bool flag",
		args: []string{"--logtostderr"},
		want: "flag --logtostderr is a kube-proxy flag that svcproxy does not implement: klog's file flags were removed from Kubernetes components in v1.26; svcproxy logs to stderr",
	}, {
		name: "typo'd mode flag",
		args: []string{"--proxy-mode=nftable"},
		want: `KubeProxyConfiguration.mode: Unsupported value: "nftable": supported values: "", "iptables", "ipvs", "nftables"`,
	}, {
		name: "ipvs masquerade bit among the ipvs dataplane's own",
		args: []string{"--proxy-mode=ipvs", "--iptables-masquerade-bit=20"},
		want: `KubeProxyConfiguration.iptables.masqueradeBit: Invalid value: 20: svcproxy's ipvs mode takes 1 to 14: it marks packets with the bits beside it and the upper 16 bits too`,
	}, {
		name: "unknown ipvs scheduler",
		args: []string{"--proxy-mode=ipvs", "--ipvs-scheduler=fastest"},
		want: `KubeProxyConfiguration.ipvs.scheduler: Unsupported value: "fastest": supported values: "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"`,
	}, {
		name: "interface-based local detection not implemented",
		args: []string{"--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cbr0"},
		want: `KubeProxyConfiguration.detectLocalMode: Invalid value: "BridgeInterface": svcproxy tells pod traffic by address only; use "ClusterCIDR" or "NodeCIDR"`,
	}, {
		name: "bad bind address flag",
		args: []string{"--healthz-bind-address=localhost:10256"},
		want: `invalid argument "localhost:10256" for "--healthz-bind-address" flag: "localhost:10256" is not IP or IP:port`,
	}, {
		name: "blank hostname override",
		args: []string{"--hostname-override=  "},
		want: `flag --hostname-override: "  " is empty once spaces are trimmed`,
	}, {
		name: "positional argument",
		args: []string{"run"},
		want: `svcproxy takes no positional arguments, got ["run"]`,
	}, {
		name: "unknown field",
		body: header + "iptables:\n  masqueradeBits: 14\n",
		want: `unknown field "iptables.masqueradeBits"`,
	}, {
		name: "field with the wrong case",
		body: header + "MetricsBindAddress: 0.0.0.0:10249\n",
		want: `unknown field "MetricsBindAddress"`,
	}, {
		name: "duplicate field",
		body: header + "mode: iptables\nmode: nftables\n",
		want: `key "mode" already set in map`,
	}, {
		name: "typo'd mode",
		body: header + "mode: nftable\n",
		want: `KubeProxyConfiguration.mode: Unsupported value: "nftable": supported values: "", "iptables", "ipvs", "nftables"`,
	}, {
		name: "bad CIDR",
		body: header + "clusterCIDR: 10.244.0.0/33\n",
		want: `KubeProxyConfiguration.clusterCIDR: Invalid value: "10.244.0.0/33": "10.244.0.0/33" is not a valid CIDR (e.g. 10.244.0.0/16 or fd00:10:244::/56)`,
	}, {
		name: "two IPv4 cluster CIDRs",
		body: header + "clusterCIDR: 10.244.0.0/16,10.245.0.0/16\n",
		want: `KubeProxyConfiguration.clusterCIDR: Invalid value: "10.244.0.0/16,10.245.0.0/16": two CIDRs must be a dual-stack pair (one IPv4, one IPv6)`,
	}, {
		name: "masqueradeBit 40",
		body: header + "iptables:\n  masqueradeBit: 40\n",
		want: "KubeProxyConfiguration.iptables.masqueradeBit: Invalid value: 40: must be within the range [0, 31]",
	}, {
		name: "wrong apiVersion",
		body: "apiVersion: kubeproxy.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\n",
		want: `apiVersion: Unsupported value: "kubeproxy.config.k8s.io/v1beta1": supported values: "kubeproxy.config.k8s.io/v1alpha1"`,
	}, {
		name: "wrong kind",
		body: "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
		want: `kind: Unsupported value: "KubeletConfiguration": supported values: "KubeProxyConfiguration"`,
	}, {
		name: "minSyncPeriod above syncPeriod",
		body: header + "mode: nftables\nnftables:\n  syncPeriod: 10s\n  minSyncPeriod: 1m\n",
		want: `KubeProxyConfiguration.nftables.minSyncPeriod: Invalid value: "1m0s": must be less than or equal to KubeProxyConfiguration.nftables.syncPeriod (10s)`,
	}, {
		name: "wrong type",
		body: header + "conntrack:\n  maxPerCore: lots\n",
		want: "conntrack.maxPerCore",
	}, {
		name: "every error at once",
		body: header + "mode: nftables\nnftables:\n  masqueradeBit: 32\nnodePortAddresses: [primary, 192.0.2.0/24]\n" +
			"metricsBindAddress: 127.0.0.1:0\ndetectLocalMode: BridgeInterface\noomScoreAdj: 2000\n",
		want: "KubeProxyConfiguration.nftables.masqueradeBit: Invalid value: 32: must be within the range [0, 31]\n" +
			"KubeProxyConfiguration.oomScoreAdj: Invalid value: 2000: must be within the range [-1000, 1000]\n" +
			"KubeProxyConfiguration.metricsBindAddress: Invalid value: \"127.0.0.1:0\": must be IP:port with a port in [1, 65535]\n" +
			"KubeProxyConfiguration.nodePortAddresses[0]: Invalid value: \"primary\": \"primary\" must be the only value\n" +
			"KubeProxyConfiguration.detectLocal.bridgeInterface: Required value: must be set for this detectLocalMode",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.body != "" {
				args = append(args, "--config="+writeFile(t, tt.body))
			}
			_, err := Parse(args)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want error %q", args, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
		})
	}
}

func TestDefaultIsIdempotentAndMatchesKubeProxy(t *testing.T) {
	cfg := newConfig()
	Default(cfg)
	once := *cfg.DeepCopy()
	Default(cfg)
	if err := Validate(cfg); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	want(t, "idempotent", cfg.HealthzBindAddress+cfg.MetricsBindAddress, once.HealthzBindAddress+once.MetricsBindAddress)
	want(t, "iptables.minSyncPeriod", cfg.IPTables.MinSyncPeriod.Duration, time.Second)
	want(t, "ipvs.minSyncPeriod", cfg.IPVS.MinSyncPeriod.Duration, time.Duration(0))
	want(t, "oomScoreAdj", *cfg.OOMScoreAdj, int32(-999))
	want(t, "tcpEstablishedTimeout", cfg.Conntrack.TCPEstablishedTimeout.Duration, 24*time.Hour)
	want(t, "tcpCloseWaitTimeout", cfg.Conntrack.TCPCloseWaitTimeout.Duration, time.Hour)

	v6 := newConfig()
	v6.BindAddress = "fd00::1"
	Default(v6)
	want(t, "IPv6 healthz", v6.HealthzBindAddress, "[::]:10256")
	want(t, "IPv6 metrics", v6.MetricsBindAddress, "[::1]:10249")
}

func TestBindAddress(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"", "", ""},
		{"0.0.0.0", "0.0.0.0:10256", ""},
		{"0.0.0.0:9999", "0.0.0.0:9999", ""},
		{"::", "[::]:10256", ""},
		{"[::1]:10249", "[::1]:10249", ""},
		{"localhost:10256", "", `bind address "localhost:10256": must be IP:port with a valid IP`},
		{"0.0.0.0:70000", "", `bind address "0.0.0.0:70000": must be IP:port with a port in [1, 65535]`},
	}
	for _, tt := range tests {
		got, err := BindAddress(tt.in, HealthzPort)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if got != tt.want || gotErr != tt.err {
			t.Errorf("BindAddress(%q) = %q, %q; want %q, %q", tt.in, got, gotErr, tt.want, tt.err)
		}
	}
}

func TestNodeName(t *testing.T) {
	cfg := newConfig()
	cfg.HostnameOverride = " Node-1\n"
	name, err := NodeName(cfg)
	want(t, "override", name, "node-1")
	want(t, "err", err, error(nil))
	cfg.HostnameOverride = ""
	host, _ := os.Hostname()
	name, _ = NodeName(cfg)
	want(t, "hostname", name, strings.ToLower(strings.TrimSpace(host)))
}

func TestWriteFileRoundTrips(t *testing.T) {
	o, err := Parse([]string{"--proxy-mode=iptables", "--cluster-cidr=10.244.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "out.yaml")
	if err := WriteFile(path, o.Config); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatalf("written config does not load strictly: %v", err)
	}
	want(t, "clusterCIDR", back.ClusterCIDR, "10.244.0.0/16")
	want(t, "mode", back.Mode, ModeIPTables)
}

func TestUsageGolden(t *testing.T) {
	var buf bytes.Buffer
	Usage(&buf)
	path := filepath.Join("testdata", "usage.golden")
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if buf.String() != string(golden) {
		t.Errorf("Usage output differs from %s (run with -update after checking):\n%s", path, buf.String())
	}
}

func want[T comparable](t *testing.T, what string, got, exp T) {
	t.Helper()
	if got != exp {
		t.Errorf("%s = %v, want %v", what, got, exp)
	}
}
