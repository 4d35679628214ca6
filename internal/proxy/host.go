package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kube-proxy/config/v1alpha1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// setUpHost does what kube-proxy does to the node before its first sync:
// the process's oom_score_adj, the conntrack sysctls and, for localhost
// NodePorts, route_localnet. Only the last is fatal, as in kube-proxy:
// without it the configuration cannot take effect.
func setUpHost(cfg *v1alpha1.KubeProxyConfiguration, pc plan.Config, env Env) error {
	if cfg.OOMScoreAdj != nil {
		if err := writeOOMScoreAdj(oomScoreAdjPath, *cfg.OOMScoreAdj); err != nil {
			env.Log.Info("Warning: cannot set oomScoreAdj (lowering it needs CAP_SYS_RESOURCE); the process keeps the kubelet's", "oomScoreAdj", *cfg.OOMScoreAdj, "err", err.Error())
		}
	}
	if err := env.Do(func() error { return applySysctls(cfg.Conntrack, sysctlRoot) }); err != nil {
		env.Log.Error(err, "Writing the conntrack sysctls")
	}
	if !pc.NodePorts(plan.IPv4).Loopback {
		return nil
	}
	env.Log.Info("Setting route_localnet=1 to allow NodePorts on localhost; to change this, set iptables.localhostNodePorts (--iptables-localhost-nodeports) false or nodePortAddresses (--nodeport-addresses) to leave out loopback addresses")
	if err := env.Do(func() error { return writeSysctl(sysctlRoot, routeLocalnet, 1) }); err != nil {
		return fmt.Errorf("iptables.localhostNodePorts: %w", err)
	}
	return nil
}

// oomScoreAdjPath is this process's OOM score adjustment, which kube-proxy
// sets from oomScoreAdj.
const oomScoreAdjPath = "/proc/self/oom_score_adj"

func writeOOMScoreAdj(path string, v int32) error {
	return os.WriteFile(path, []byte(strconv.Itoa(int(v))), 0o644)
}

// routeLocalnet lets packets from 127.0.0.0/8 be routed off the host, as
// a NodePort on 127.0.0.1 DNATed to a pod needs (sysctl
// net.ipv4.conf.all.route_localnet).
const routeLocalnet = "net/ipv4/conf/all/route_localnet"

// sysctlRoot is where sysctls are written.
const sysctlRoot = "/proc/sys"

// applySysctls sets the conntrack table size and timeouts kube-proxy sets:
// nf_conntrack_max from maxPerCore × CPUs (at least min), and the TCP and
// UDP timeouts. Zero values leave a setting alone. Values are written only
// when they differ.
func applySysctls(c v1alpha1.KubeProxyConntrackConfiguration, root string) error {
	var errs []error
	set := func(name string, v int64) {
		if v > 0 {
			errs = append(errs, writeSysctl(root, name, v))
		}
	}
	if c.MaxPerCore != nil && *c.MaxPerCore > 0 {
		n := int64(*c.MaxPerCore) * int64(runtime.NumCPU())
		if c.Min != nil && n < int64(*c.Min) {
			n = int64(*c.Min)
		}
		set("net/netfilter/nf_conntrack_max", n)
	}
	seconds := func(d *metav1.Duration) int64 {
		if d == nil {
			return 0
		}
		return int64(d.Duration / time.Second)
	}
	set("net/netfilter/nf_conntrack_tcp_timeout_established", seconds(c.TCPEstablishedTimeout))
	set("net/netfilter/nf_conntrack_tcp_timeout_close_wait", seconds(c.TCPCloseWaitTimeout))
	set("net/netfilter/nf_conntrack_udp_timeout", seconds(&c.UDPTimeout))
	set("net/netfilter/nf_conntrack_udp_timeout_stream", seconds(&c.UDPStreamTimeout))
	if c.TCPBeLiberal {
		set("net/netfilter/nf_conntrack_tcp_be_liberal", 1)
	}
	return errors.Join(errs...)
}

func writeSysctl(root, name string, v int64) error {
	path := filepath.Join(root, name)
	want := strconv.FormatInt(v, 10)
	if cur, err := os.ReadFile(path); err == nil && string(trimNL(cur)) == want {
		return nil
	}
	if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, want, err)
	}
	return nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// ConfigPoll is how often the --config file is read again.
const ConfigPoll = 5 * time.Second

// errConfigChanged ends the proxy when its --config file changes, as
// kube-proxy exits then: restarted by its DaemonSet, it reads the new one.
var errConfigChanged = errors.New("content of the proxy server's configuration file was updated")

// watchConfig returns errConfigChanged once path's content, read again
// at each tick, differs from what it was at start; a file that cannot be
// read is no change.
func watchConfig(ctx context.Context, path string, tick <-chan time.Time) error {
	start, err := os.ReadFile(path)
	if err != nil {
		return nil // Parse read it; nothing to compare with
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
		if now, err := os.ReadFile(path); err == nil && !bytes.Equal(now, start) {
			return fmt.Errorf("%s: %w", path, errConfigChanged)
		}
	}
}
