package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/kube-proxy/config/v1alpha1"
)

// kubeProxyFlags are the flags of kube-proxy v1.36.3 on Linux, as its
// --help lists them (and the two deprecated ones it hides).
var kubeProxyFlags = strings.Fields(`bind-address bind-address-hard-fail boot-id-file cleanup cluster-cidr
config config-sync-period conntrack-max-per-core conntrack-min conntrack-tcp-be-liberal
conntrack-tcp-timeout-close-wait conntrack-tcp-timeout-established conntrack-udp-timeout
conntrack-udp-timeout-stream detect-local-mode feature-gates healthz-bind-address healthz-port help
hostname-override init-only iptables-localhost-nodeports iptables-masquerade-bit iptables-min-sync-period
iptables-sync-period ipvs-exclude-cidrs ipvs-min-sync-period ipvs-scheduler ipvs-strict-arp
ipvs-sync-period ipvs-tcp-timeout ipvs-tcpfin-timeout ipvs-udp-timeout kube-api-burst
kube-api-content-type kube-api-qps kubeconfig log-flush-frequency log-json-info-buffer-size
log-json-split-stream log-text-info-buffer-size log-text-split-stream logging-format machine-id-file
masquerade-all master metrics-bind-address metrics-port nodeport-addresses oom-score-adj
pod-bridge-interface pod-interface-name-prefix profiling proxy-mode show-hidden-metrics-for-version v
version vmodule write-config-to`)

// TestFlagsDoc: docs/flags.md has a row for every kube-proxy v1.36 flag,
// every flag svcproxy registers (its own, the refused ones) and every
// KubeProxyConfiguration field, and no row for one that does not exist,
// so the table cannot drift from the code.
func TestFlagsDoc(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/flags.md")
	if err != nil {
		t.Fatal(err)
	}
	flagRows, fieldRows := docRows(string(doc))
	var flags []string
	newFlags().set.VisitAll(func(f *pflag.Flag) { flags = append(flags, f.Name) })
	for _, name := range append(flags, kubeProxyFlags...) {
		if !slices.Contains(flagRows, name) {
			t.Errorf("docs/flags.md has no row for flag --%s", name)
		}
	}
	for _, name := range flagRows {
		if !slices.Contains(flags, name) && !slices.Contains(kubeProxyFlags, name) {
			t.Errorf("docs/flags.md has a row for --%s, a flag neither svcproxy nor kube-proxy has", name)
		}
	}
	fields := fieldPaths(reflect.TypeFor[v1alpha1.KubeProxyConfiguration](), "")
	for _, f := range fields {
		if !slices.Contains(fieldRows, f) {
			t.Errorf("docs/flags.md has no row for field %s", f)
		}
	}
	for _, f := range fieldRows {
		if !slices.Contains(fields, f) {
			t.Errorf("docs/flags.md has a row for field %s, which KubeProxyConfiguration does not have", f)
		}
	}
	if len(fields) < 50 || len(flags) < 60 {
		t.Fatalf("only %d fields and %d flags found: the walk is broken", len(fields), len(flags))
	}
}

// docRows returns the names in the first column of the document's flag
// rows ("| `--name` |", or "| `-v`, `--v` |") and field rows ("| `a.b` |").
func docRows(doc string) (flags, fields []string) {
	row := regexp.MustCompile("(?m)^\\| ([^|]+)\\|")
	name := regexp.MustCompile("`(-{1,2})?([a-zA-Z0-9.-]+)`")
	for _, m := range row.FindAllStringSubmatch(doc, -1) {
		for _, n := range name.FindAllStringSubmatch(m[1], -1) {
			if n[1] != "" {
				flags = append(flags, n[2])
			} else {
				fields = append(fields, n[2])
			}
		}
	}
	return flags, fields
}

// leafTypes are struct types the file holds as one value.
var leafTypes = []string{"Duration", "TimeOrMetaDuration", "QuantityValue"}

// fieldPaths lists the JSON paths of t's fields, descending into structs
// (inline ones add no segment), as "iptables.masqueradeBit".
func fieldPaths(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		inline := strings.Contains(f.Tag.Get("json"), "inline")
		if tag == "-" || (tag == "" && !inline) {
			continue
		}
		path := prefix + tag
		if inline {
			path = strings.TrimSuffix(prefix, ".")
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && !slices.Contains(leafTypes, ft.Name()) {
			sub := path + "."
			if path == "" {
				sub = ""
			}
			out = append(out, fieldPaths(ft, sub)...)
			continue
		}
		out = append(out, path)
	}
	return out
}
