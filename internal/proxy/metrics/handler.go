package metrics

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// configzGroup is the key kube-proxy's /configz puts its configuration
// under.
const configzGroup = "kubeproxy.config.k8s.io"

// Handler is the metrics server's mux, as kube-proxy's: /metrics (Prometheus
// text, with promhttp's own request counters), /healthz (delegated to
// healthz; nil answers "ok" as kube-proxy's metrics port does), /proxyMode
// (the mode name as plain text) and /configz ({"kubeproxy.config.k8s.io":
// the configuration}; a nil configz gives null, as kube-proxy before its
// configuration is set). Every other path is 404.
func Handler(m *Metrics, proxyMode string, configz func() any, healthz http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.InstrumentMetricHandler(m.registry, promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})))
	if healthz == nil {
		healthz = http.HandlerFunc(serveOK)
	}
	mux.Handle("/healthz", healthz)
	mux.HandleFunc("/proxyMode", func(w http.ResponseWriter, _ *http.Request) {
		setTextHeaders(w.Header())
		_, _ = io.WriteString(w, proxyMode)
	})
	mux.HandleFunc("/configz", func(w http.ResponseWriter, _ *http.Request) { serveConfigz(w, configz) })
	return mux
}

func setTextHeaders(h http.Header) {
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
}

func serveOK(w http.ResponseWriter, _ *http.Request) {
	setTextHeaders(w.Header())
	_, _ = io.WriteString(w, "ok")
}

func serveConfigz(w http.ResponseWriter, configz func() any) {
	var config any
	if configz != nil {
		config = configz()
	}
	body, err := json.Marshal(map[string]any{configzGroup: config})
	if err != nil {
		http.Error(w, "error marshaling json: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}
