// Package metrics owns the proxy's Prometheus metrics and the metrics
// server's mux (kube-proxy's 127.0.0.1:10249: /metrics, /healthz,
// /proxyMode, /configz).
//
// Names, help texts, buckets and labels are kube-proxy v1.36's
// (pkg/proxy/metrics) wherever the meaning is the same, including the
// "[ALPHA] " prefix its metrics framework puts on every help text, so
// dashboards and alerts written for kube-proxy keep working. Metrics that
// are ours alone are named svcproxy_*.
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

const (
	subsystem = "kubeproxy"
	alpha     = "[ALPHA] "
)

// Label names, as kube-proxy spells them.
const (
	familyLabel        = "ip_family"
	codeLabel          = "code"
	trafficPolicyLabel = "traffic_policy"
)

// syncBuckets are kube-proxy's sync latency buckets: 1 ms doubling 15 times.
var syncBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// programmingBuckets are kube-proxy's network programming buckets: 0.25 s,
// 0.5 s, every second to 59 s, every 5 s to 115 s, every 30 s to 5 min.
var programmingBuckets = concat(
	prometheus.LinearBuckets(0.25, 0.25, 2),
	prometheus.LinearBuckets(1, 1, 59),
	prometheus.LinearBuckets(60, 5, 12),
	prometheus.LinearBuckets(120, 30, 7),
)

func concat(lists ...[]float64) []float64 {
	var out []float64
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// failureCounters names the sync failure counter per proxy mode: kube-proxy
// counts nftables transactions that fail, and iptables-restore runs that
// fail in iptables and ipvs modes (IPVS mode programs its filtering with
// iptables too).
var failureCounters = map[string]struct{ name, help string }{
	"nftables": {"sync_proxy_rules_nftables_sync_failures_total", "Cumulative proxy nftables sync failures"},
	"iptables": {"sync_proxy_rules_iptables_restore_failures_total", "Cumulative proxy iptables restore failures"},
	"ipvs":     {"sync_proxy_rules_iptables_restore_failures_total", "Cumulative proxy iptables restore failures"},
}

// Metrics holds every metric the agent records, in its own registry.
type Metrics struct {
	registry *prometheus.Registry

	syncDuration        *prometheus.HistogramVec
	syncFullDuration    *prometheus.HistogramVec
	syncPartialDuration *prometheus.HistogramVec
	lastSync            *prometheus.GaugeVec
	lastQueued          *prometheus.GaugeVec
	syncFailures        *prometheus.CounterVec
	networkProgramming  *prometheus.HistogramVec
	noLocalEndpoints    *prometheus.GaugeVec
	healthz             *prometheus.CounterVec
	livez               *prometheus.CounterVec
	fallbacks           prometheus.Counter
	conntrackDeleted    *prometheus.CounterVec
	conntrackErrors     *prometheus.CounterVec
	listenFailures      *prometheus.CounterVec
	schedNotSupported   prometheus.Gauge
	endpointChanges     changes
	serviceChanges      changes
}

// New returns the metrics of the nftables proxy mode (the default).
func New() *Metrics { return NewForMode("nftables") }

// NewForMode returns the metrics of one proxy mode; the mode only chooses
// the name of the sync failure counter (unknown modes get nftables').
func NewForMode(mode string) *Metrics {
	failures, ok := failureCounters[mode]
	if !ok {
		failures = failureCounters["nftables"]
	}
	m := &Metrics{
		registry:            prometheus.NewRegistry(),
		syncDuration:        histogram("sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds", syncBuckets),
		syncFullDuration:    histogram("sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs", syncBuckets),
		syncPartialDuration: histogram("sync_partial_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for partial resyncs", syncBuckets),
		lastSync:            gauge("sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced", familyLabel),
		lastQueued:          gauge("sync_proxy_rules_last_queued_timestamp_seconds", "The last time a sync of proxy rules was queued", familyLabel),
		syncFailures:        counter(failures.name, failures.help, familyLabel),
		networkProgramming:  histogram("network_programming_duration_seconds", "In Cluster Network Programming Latency in seconds", programmingBuckets),
		// kube-proxy made this a gauge despite the _total name.
		noLocalEndpoints: gauge("sync_proxy_rules_no_local_endpoints_total", "Number of services with a Local traffic policy and no endpoints", trafficPolicyLabel, familyLabel),
		healthz:          counter("proxy_healthz_total", "Cumulative proxy healthz HTTP status", codeLabel),
		livez:            counter("proxy_livez_total", "Cumulative proxy livez HTTP status", codeLabel),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: FallbacksName,
			Help: "Cumulative nftables writes that fell back from netlink to the nft binary",
		}),
		conntrackDeleted: counter("conntrack_reconciler_deleted_entries_total", "Cumulative conntrack flows deleted by conntrack reconciler", familyLabel),
		conntrackErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ConntrackErrorsName,
			Help: "Cumulative failures to delete stale UDP conntrack entries after a sync",
		}, []string{familyLabel}),
		listenFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ListenFailuresName,
			Help: "Cumulative failures of the healthz or metrics server to listen on its address (retried every 5 s unless bindAddressHardFail)",
		}, []string{"server"}),
		schedNotSupported: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: SchedulerNotSupportedName,
			Help: "Service ports whose chosen scheduler (annotation " + plan.AnnotationScheduler + " or --ipvs-scheduler) the dataplane cannot express, at the last sync",
		}),
		endpointChanges: newChanges("endpoint", "Endpoint"),
		serviceChanges:  newChanges("service", "Service"),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.syncDuration, m.syncFullDuration, m.syncPartialDuration,
		m.lastSync, m.lastQueued, m.syncFailures, m.networkProgramming,
		m.noLocalEndpoints, m.healthz, m.livez, m.fallbacks,
		m.conntrackDeleted, m.conntrackErrors, m.listenFailures, m.schedNotSupported,
		m.endpointChanges.pending, m.endpointChanges.total,
		m.serviceChanges.pending, m.serviceChanges.total,
	)
	return m
}

func histogram(name, help string, buckets []float64) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: subsystem, Name: name, Help: alpha + help, Buckets: buckets}, []string{familyLabel})
}

func gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: subsystem, Name: name, Help: alpha + help}, labels)
}

func counter(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: subsystem, Name: name, Help: alpha + help}, labels)
}

// Registry returns the registry holding every metric.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// SyncDone records one sync of family f: its duration (overall and as full
// or partial), and either a failure or the time of this success.
func (m *Metrics) SyncDone(f plan.Family, full bool, took time.Duration, err error) {
	family := f.String()
	m.syncDuration.WithLabelValues(family).Observe(took.Seconds())
	if full {
		m.syncFullDuration.WithLabelValues(family).Observe(took.Seconds())
	} else {
		m.syncPartialDuration.WithLabelValues(family).Observe(took.Seconds())
	}
	if err != nil {
		m.syncFailures.WithLabelValues(family).Inc()
		return
	}
	m.lastSync.WithLabelValues(family).SetToCurrentTime()
}

// Queued records that a sync of family f was requested now.
func (m *Metrics) Queued(f plan.Family) {
	m.lastQueued.WithLabelValues(f.String()).SetToCurrentTime()
}

// EndpointChanges records the EndpointSlice changes not yet synced and the
// number seen since the agent started (a running total; the counter follows
// it and never goes down).
func (m *Metrics) EndpointChanges(pending, total int) { m.endpointChanges.record(pending, total) }

// ServiceChanges records the Service changes not yet synced and the number
// seen since the agent started, as EndpointChanges does.
func (m *Metrics) ServiceChanges(pending, total int) { m.serviceChanges.record(pending, total) }

// NetworkProgrammed records, after a successful sync of family f, how long
// an endpoint change took to reach the rules: from trigger (an
// EndpointSlice's endpoints.kubernetes.io/last-change-trigger-time) to now.
// Zero trigger times (no annotation) are ignored.
func (m *Metrics) NetworkProgrammed(f plan.Family, trigger, now time.Time) {
	if trigger.IsZero() {
		return
	}
	m.networkProgramming.WithLabelValues(f.String()).Observe(now.Sub(trigger).Seconds())
}

// NoLocalEndpoints records, for family f, how many Services with a Local
// internal or external traffic policy have no local endpoint.
func (m *Metrics) NoLocalEndpoints(f plan.Family, internal, external int) {
	m.noLocalEndpoints.WithLabelValues("internal", f.String()).Set(float64(internal))
	m.noLocalEndpoints.WithLabelValues("external", f.String()).Set(float64(external))
}

// SchedulerNotSupported records how many service ports chose a scheduler
// the dataplane cannot express.
func (m *Metrics) SchedulerNotSupported(ports int) { m.schedNotSupported.Set(float64(ports)) }

// HealthzAnswer counts one /healthz answer by status code.
func (m *Metrics) HealthzAnswer(code int) { m.healthz.WithLabelValues(codeString(code)).Inc() }

// LivezAnswer counts one /livez answer by status code.
func (m *Metrics) LivezAnswer(code int) { m.livez.WithLabelValues(codeString(code)).Inc() }

// Fallback counts one nftables write that fell back from netlink to the nft
// binary.
func (m *Metrics) Fallback() { m.fallbacks.Inc() }

// ListenFailed counts one failure of a server ("healthz" or "metrics") to
// listen on its address.
func (m *Metrics) ListenFailed(server string) { m.listenFailures.WithLabelValues(server).Inc() }

// ConntrackCleaned records one cleaning of stale UDP conntrack entries in
// family f after a sync: how many it deleted, and whether it failed.
func (m *Metrics) ConntrackCleaned(f plan.Family, deleted uint, err error) {
	m.conntrackDeleted.WithLabelValues(f.String()).Add(float64(deleted))
	if err != nil {
		m.conntrackErrors.WithLabelValues(f.String()).Inc()
	}
}

// ShowFamily makes family f's failure counters appear on the page at zero
// before anything fails: a page without them could not tell an agent that
// never failed from one that never counted (see Failures).
func (m *Metrics) ShowFamily(f plan.Family) {
	m.syncFailures.WithLabelValues(f.String())
	m.conntrackErrors.WithLabelValues(f.String())
	m.conntrackDeleted.WithLabelValues(f.String())
}

func codeString(code int) string { return strconv.Itoa(code) }

// changes is a pending gauge and a total counter for one kind of object.
type changes struct {
	pending prometheus.Gauge
	total   prometheus.Counter

	mu   sync.Mutex
	seen int
}

func newChanges(kind, title string) changes {
	return changes{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Subsystem: subsystem, Name: "sync_proxy_rules_" + kind + "_changes_pending", Help: alpha + "Pending proxy rules " + title + " changes"}),
		total:   prometheus.NewCounter(prometheus.CounterOpts{Subsystem: subsystem, Name: "sync_proxy_rules_" + kind + "_changes_total", Help: alpha + "Cumulative proxy rules " + title + " changes"}),
	}
}

func (c *changes) record(pending, total int) {
	c.pending.Set(float64(max(pending, 0)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if total > c.seen {
		c.total.Add(float64(total - c.seen))
		c.seen = total
	}
}
