package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

func get(t *testing.T, h http.Handler, path string) (int, http.Header, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, rec.Result().Header, string(body)
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	code, _, body := get(t, Handler(m, "nftables", nil, nil), "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	return body
}

func requireLines(t *testing.T, body string, lines ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		have[l] = true
	}
	for _, l := range lines {
		if !have[l] {
			t.Errorf("/metrics lacks %q", l)
		}
	}
}

func TestRecordedMetrics(t *testing.T) {
	m := New()
	m.SyncDone(plan.IPv4, true, 3*time.Millisecond, nil)
	m.SyncDone(plan.IPv4, false, 500*time.Microsecond, nil)
	m.SyncDone(plan.IPv6, false, 20*time.Second, errors.New("nft: boom"))
	m.Queued(plan.IPv6)
	m.EndpointChanges(3, 5)
	m.EndpointChanges(0, 4) // an older total never lowers the counter
	m.ServiceChanges(1, 2)
	now := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	m.NetworkProgrammed(plan.IPv4, now.Add(-1500*time.Millisecond), now)
	m.NetworkProgrammed(plan.IPv4, time.Time{}, now) // no annotation: ignored
	m.NoLocalEndpoints(plan.IPv4, 2, 1)
	m.HealthzAnswer(200)
	m.HealthzAnswer(503)
	m.HealthzAnswer(503)
	m.LivezAnswer(200)
	m.Fallback()
	m.ConntrackCleaned(plan.IPv4, 3, nil)
	m.ConntrackCleaned(plan.IPv4, 1, errors.New("dump interrupted"))

	body := scrape(t, m)
	requireLines(t, body,
		"# HELP kubeproxy_sync_proxy_rules_duration_seconds [ALPHA] SyncProxyRules latency in seconds",
		"# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram",
		`kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="0.001"} 1`,
		`kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="0.004"} 2`,
		`kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="16.384"} 2`,
		`kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv6",le="16.384"} 0`,
		`kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv6"} 1`,
		"# HELP kubeproxy_sync_full_proxy_rules_duration_seconds [ALPHA] SyncProxyRules latency in seconds for full resyncs",
		`kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1`,
		"# HELP kubeproxy_sync_partial_proxy_rules_duration_seconds [ALPHA] SyncProxyRules latency in seconds for partial resyncs",
		`kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1`,
		`kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv6"} 1`,
		"# HELP kubeproxy_sync_proxy_rules_nftables_sync_failures_total [ALPHA] Cumulative proxy nftables sync failures",
		"# TYPE kubeproxy_sync_proxy_rules_nftables_sync_failures_total counter",
		`kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv6"} 1`,
		"# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds [ALPHA] The last time proxy rules were successfully synced",
		"# HELP kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds [ALPHA] The last time a sync of proxy rules was queued",
		"# HELP kubeproxy_sync_proxy_rules_endpoint_changes_pending [ALPHA] Pending proxy rules Endpoint changes",
		"kubeproxy_sync_proxy_rules_endpoint_changes_pending 0",
		"# HELP kubeproxy_sync_proxy_rules_endpoint_changes_total [ALPHA] Cumulative proxy rules Endpoint changes",
		"kubeproxy_sync_proxy_rules_endpoint_changes_total 5",
		"kubeproxy_sync_proxy_rules_service_changes_pending 1",
		"kubeproxy_sync_proxy_rules_service_changes_total 2",
		"# HELP kubeproxy_network_programming_duration_seconds [ALPHA] In Cluster Network Programming Latency in seconds",
		`kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="1"} 0`,
		`kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="2"} 1`,
		`kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="300"} 1`,
		`kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"} 1`,
		"# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge",
		`kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"} 2`,
		`kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"} 1`,
		"# HELP kubeproxy_proxy_healthz_total [ALPHA] Cumulative proxy healthz HTTP status",
		`kubeproxy_proxy_healthz_total{code="200"} 1`,
		`kubeproxy_proxy_healthz_total{code="503"} 2`,
		`kubeproxy_proxy_livez_total{code="200"} 1`,
		"svcproxy_nftables_netlink_fallbacks_total 1",
		"# HELP kubeproxy_conntrack_reconciler_deleted_entries_total [ALPHA] Cumulative conntrack flows deleted by conntrack reconciler",
		`kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family="IPv4"} 4`,
		`svcproxy_conntrack_cleaning_errors_total{ip_family="IPv4"} 1`,
	)
	for _, name := range []string{`kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} `, `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv6"} `, "go_goroutines ", "process_start_time_seconds "} {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}
	if strings.Contains(body, `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv6"}`) {
		t.Error("a failed sync set the last successful sync time")
	}
}

func TestBuckets(t *testing.T) {
	if len(programmingBuckets) != 80 || programmingBuckets[0] != 0.25 || programmingBuckets[2] != 1 || programmingBuckets[61] != 60 || programmingBuckets[79] != 300 {
		t.Errorf("network programming buckets %v", programmingBuckets)
	}
	if len(syncBuckets) != 15 || syncBuckets[14] != 16.384 {
		t.Errorf("sync buckets %v", syncBuckets)
	}
}

func TestFailureCounterPerMode(t *testing.T) {
	for mode, want := range map[string]string{
		"iptables": `kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"} 1`,
		"ipvs":     `kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"} 1`,
		"nftables": `kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv4"} 1`,
	} {
		m := NewForMode(mode)
		m.SyncDone(plan.IPv4, true, time.Millisecond, errors.New("x"))
		requireLines(t, scrape(t, m), want)
	}
}

// TestFailures: a page with every failure counter at zero has none; each
// kind of failure is named with its labels; a page without the counters is
// an error, not a clean record.
func TestFailures(t *testing.T) {
	for _, mode := range []string{"nftables", "iptables"} {
		m := NewForMode(mode)
		m.ShowFamily(plan.IPv4)
		m.ShowFamily(plan.IPv6)
		if got, err := Failures(strings.NewReader(scrape(t, m))); err != nil || len(got) != 0 {
			t.Errorf("%s, nothing failed: %q, %v", mode, got, err)
		}
		m.SyncDone(plan.IPv6, false, time.Millisecond, errors.New("partial sync failed"))
		m.SyncDone(plan.IPv6, true, time.Millisecond, nil) // the retry healed it: still a failure
		m.Fallback()
		m.ConntrackCleaned(plan.IPv4, 0, errors.New("x"))
		got, err := Failures(strings.NewReader(scrape(t, m)))
		sync := map[string]string{"nftables": "nftables_sync", "iptables": "iptables_restore"}[mode]
		want := []string{
			"svcproxy_nftables_netlink_fallbacks_total 1",
			`svcproxy_conntrack_cleaning_errors_total{ip_family="IPv4"} 1`,
			`kubeproxy_sync_proxy_rules_` + sync + `_failures_total{ip_family="IPv6"} 1`,
		}
		if err != nil || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: %q, %v, want %q", mode, got, err, want)
		}
	}
	if got, err := Failures(strings.NewReader(scrape(t, New()))); err == nil {
		t.Errorf("a page before any family was shown: %q, want an error (no sync failure series)", got)
	}
	if _, err := Failures(strings.NewReader("go_goroutines 7\n")); err == nil {
		t.Error("a page without svcproxy's counters: want an error")
	}
}

func TestMetricsServer(t *testing.T) {
	m := New()
	config := map[string]any{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration", "mode": "nftables"}
	proxyHealthz := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	h := Handler(m, "nftables", func() any { return config }, proxyHealthz)
	tests := []struct {
		path, contentType, body string
		code                    int
	}{
		{"/proxyMode", "text/plain; charset=utf-8", "nftables", 200},
		{"/configz", "application/json", `{"kubeproxy.config.k8s.io":{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration","mode":"nftables"}}`, 200},
		{"/healthz", "", "", 503},
		{"/other", "text/plain; charset=utf-8", "404 page not found\n", 404},
	}
	for _, tt := range tests {
		code, hdr, body := get(t, h, tt.path)
		if code != tt.code || body != tt.body || hdr.Get("Content-Type") != tt.contentType {
			t.Errorf("%s: %d %q %q, want %d %q %q", tt.path, code, hdr.Get("Content-Type"), body, tt.code, tt.contentType, tt.body)
		}
		if code == 200 && hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff header", tt.path)
		}
	}

	// Defaults: healthz says ok; configz before a configuration is null.
	bare := Handler(m, "iptables", nil, nil)
	for path, want := range map[string]string{"/healthz": "ok", "/configz": `{"kubeproxy.config.k8s.io":null}`, "/proxyMode": "iptables"} {
		if code, _, body := get(t, bare, path); code != 200 || body != want {
			t.Errorf("default %s: %d %q, want %q", path, code, body, want)
		}
	}
	if code, _, body := get(t, Handler(m, "nftables", func() any { return make(chan int) }, nil), "/configz"); code != 500 || !strings.Contains(body, "error marshaling json") {
		t.Errorf("unmarshalable config: %d %q", code, body)
	}
}
