package health

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// ToBeDeletedTaint is the taint the cluster autoscaler puts on a node it is
// about to remove.
const ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// ProxyHealth tracks whether the proxy keeps its rules up to date, per
// family, and whether this node should receive traffic.
//
// A family appears in the answers once Updated has been called for it. As in
// kube-proxy, the agent should call Updated for each family when its sync
// loop starts, so that a proxy whose first sync never succeeds still turns
// unhealthy after 2 × syncPeriod; before that, with no family known, the
// proxy counts as healthy.
type ProxyHealth struct {
	// OnAnswer, when set, is called after each /healthz or /livez answer
	// with the path and the status code (for kube-proxy's
	// kubeproxy_proxy_healthz_total and kubeproxy_proxy_livez_total). Set it
	// before serving.
	OnAnswer func(path string, code int)

	families []plan.Family
	timeout  time.Duration
	now      func() time.Time

	mu           sync.Mutex
	lastUpdated  map[plan.Family]time.Time
	oldestQueued map[plan.Family]time.Time
	nodeEligible bool
	problems     []string
}

// NewProxyHealth returns the health of a proxy that handles the given
// families and syncs at least every syncPeriod. now is the clock (nil:
// time.Now). Calls about other families are ignored. The Node counts as
// ineligible until SyncNode reports it.
func NewProxyHealth(families []plan.Family, syncPeriod time.Duration, now func() time.Time) *ProxyHealth {
	if now == nil {
		now = time.Now
	}
	return &ProxyHealth{
		families:     slices.Clone(families),
		timeout:      2 * syncPeriod,
		now:          now,
		lastUpdated:  map[plan.Family]time.Time{},
		oldestQueued: map[plan.Family]time.Time{},
	}
}

// QueuedUpdate records that a change is pending for f. Only the time of the
// oldest pending change is kept.
func (h *ProxyHealth) QueuedUpdate(f plan.Family) {
	if !slices.Contains(h.families, f) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, pending := h.oldestQueued[f]; !pending {
		h.oldestQueued[f] = h.now()
	}
}

// Updated records that a sync of f succeeded: nothing is pending and the
// family was last updated now.
func (h *ProxyHealth) Updated(f plan.Family) {
	if !slices.Contains(h.families, f) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.oldestQueued, f)
	h.lastUpdated[f] = h.now()
}

// SyncNode records this Node's eligibility: it is eligible unless it has a
// deletionTimestamp or the ToBeDeletedByClusterAutoscaler taint. Call it
// with nil when the Node is deleted; a missing Node is not eligible.
// (kube-proxy keeps the last Node it saw after a delete; a deleted node
// answering 503 is what its load balancers need, so we do not.)
func (h *ProxyHealth) SyncNode(node *v1.Node) {
	eligible := nodeEligible(node)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodeEligible = eligible
}

func nodeEligible(node *v1.Node) bool {
	if node == nil || !node.DeletionTimestamp.IsZero() {
		return false
	}
	for _, t := range node.Spec.Taints {
		if t.Key == ToBeDeletedTaint {
			return false
		}
	}
	return true
}

// Broken records a duty the proxy cannot do, for as long as it runs (why,
// as a sentence: "conntrack cleanup is off: ..."). From then on /healthz
// answers 503 with the reasons under "problems", and Healthy is false, so
// load balancers send this node no traffic; /livez ignores it, since
// restarting the proxy would not fix the node.
func (h *ProxyHealth) Broken(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.problems = append(h.problems, reason)
}

// Healthy reports whether every known family is up to date and nothing is
// Broken. The Node's eligibility does not count (health-check node ports
// use this).
func (h *ProxyHealth) Healthy() bool {
	a := h.snapshot()
	return a.Healthy && len(a.Problems) == 0
}

// familyStatus is one family's entry in the answer.
type familyStatus struct {
	LastUpdated time.Time `json:"lastUpdated"`
	Healthy     bool      `json:"healthy"`
}

// answer is the JSON body of /healthz and /livez; field order is
// kube-proxy's.
type answer struct {
	LastUpdated  time.Time               `json:"lastUpdated"`
	CurrentTime  time.Time               `json:"currentTime"`
	NodeEligible *bool                   `json:"nodeEligible,omitempty"`
	Healthy      bool                    `json:"healthy"`
	Status       map[string]familyStatus `json:"status,omitempty"`
	// Problems are ours: what Broken recorded (never in kube-proxy's
	// answers, and absent from ours while there is none).
	Problems []string `json:"problems,omitempty"`
}

// snapshot computes the answer without the Node: lastUpdated is the most
// recent family update (zero before any).
func (h *ProxyHealth) snapshot() answer {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	a := answer{CurrentTime: now, Healthy: true, Status: map[string]familyStatus{}, Problems: slices.Clone(h.problems)}
	for f, last := range h.lastUpdated {
		if last.After(a.LastUpdated) {
			a.LastUpdated = last
		}
		healthy := h.familyHealthy(f, now)
		a.Healthy = a.Healthy && healthy
		a.Status[f.String()] = familyStatus{LastUpdated: last, Healthy: healthy}
	}
	return a
}

// familyHealthy: nothing pending, or the oldest pending change is younger
// than the timeout. Called with mu held.
func (h *ProxyHealth) familyHealthy(f plan.Family, now time.Time) bool {
	queued, pending := h.oldestQueued[f]
	return !pending || now.Sub(queued) < h.timeout
}

func (h *ProxyHealth) eligible() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nodeEligible
}

// Handler serves /healthz and /livez; every other path is 404.
func (h *ProxyHealth) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", h.serveHealthz)
	mux.HandleFunc("/livez", h.serveLivez)
	return mux
}

func (h *ProxyHealth) serveHealthz(w http.ResponseWriter, r *http.Request) {
	a := h.snapshot()
	eligible := h.eligible()
	a.NodeEligible = &eligible
	a.Healthy = a.Healthy && len(a.Problems) == 0
	h.write(w, r.URL.Path, a, a.Healthy && eligible)
}

func (h *ProxyHealth) serveLivez(w http.ResponseWriter, r *http.Request) {
	a := h.snapshot()
	a.Problems = nil
	h.write(w, r.URL.Path, a, a.Healthy)
}

// write sends the answer. A healthy answer reports lastUpdated as now, as
// kube-proxy does for compatibility with releases whose lastUpdated was the
// time of the last sync loop run.
func (h *ProxyHealth) write(w http.ResponseWriter, path string, a answer, healthy bool) {
	code := http.StatusServiceUnavailable
	if healthy {
		code = http.StatusOK
		a.LastUpdated = h.now()
	}
	setJSONHeaders(w.Header())
	w.WriteHeader(code)
	body, _ := json.Marshal(a) // cannot fail: times come from the clock
	_, _ = w.Write(body)
	if h.OnAnswer != nil {
		h.OnAnswer(path, code)
	}
}

// setJSONHeaders sets the headers every health answer carries.
func setJSONHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
}
