package metrics

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The counters of ours that count a degraded path.
const (
	FallbacksName       = "svcproxy_nftables_netlink_fallbacks_total"
	ConntrackErrorsName = "svcproxy_conntrack_cleaning_errors_total"
	// ListenFailuresName counts the healthz and metrics servers' failures
	// to listen; Failures leaves it out: a proxy without its servers still
	// programs Services (bindAddressHardFail false).
	ListenFailuresName = "svcproxy_server_listen_failures_total"
	// SchedulerNotSupportedName is how many service ports chose a
	// scheduler the dataplane cannot express (and get its default
	// instead); Failures leaves it out: it is the Services' choice, not
	// the agent's failure.
	SchedulerNotSupportedName = "svcproxy_scheduler_not_supported_service_ports"
)

// Failures reads a metrics page (what /metrics serves) and describes every
// failure it counts: failed syncs (a failure healed by the retry counts
// too), nftables writes that fell back from netlink to nft, and failed
// cleanings of stale UDP conntrack entries; one "name{labels} value" per
// series that is not zero. None means the agent recorded none.
//
// The page must hold every one of those counters (an agent shows them at
// zero once its sync loop runs): a page without one is an error, so that a
// renamed counter cannot pass for a clean record.
func Failures(page io.Reader) ([]string, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(page)
	if err != nil {
		return nil, fmt.Errorf("reading the metrics page: %w", err)
	}
	names := []string{FallbacksName, ConntrackErrorsName}
	for _, c := range failureCounters {
		if name := subsystem + "_" + c.name; families[name] != nil && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) == 2 {
		return nil, errors.New("the metrics page has no sync failure counter")
	}
	var out []string
	for _, name := range names {
		mf := families[name]
		if mf == nil || len(mf.GetMetric()) == 0 {
			return nil, fmt.Errorf("the metrics page has no %s", name)
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				out = append(out, fmt.Sprintf("%s%s %g", name, labels(m), v))
			}
		}
	}
	return out, nil
}

// labels formats a series' labels as Prometheus prints them.
func labels(m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return ""
	}
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	return "{" + strings.Join(parts, ",") + "}"
}
