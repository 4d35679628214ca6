package health

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var start = time.Date(2026, 11, 22, 6, 25, 46, 900_000_000, time.UTC)

const syncPeriod = 30 * time.Second

// answerOf fetches one path and returns the status code and the body.
func answerOf(t *testing.T, h http.Handler, path string) (int, http.Header, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, rec.Result().Header, string(body)
}

func tainted() *v1.Node {
	n := objects.Node("node1", "")
	n.Spec.Taints = []v1.Taint{{Key: "other", Effect: v1.TaintEffectNoSchedule}, {Key: ToBeDeletedTaint, Effect: v1.TaintEffectNoSchedule}}
	return n
}

func deleting() *v1.Node {
	n := objects.Node("node1", "")
	n.DeletionTimestamp = &metav1.Time{Time: start}
	return n
}

func TestProxyHealthAnswers(t *testing.T) {
	dual := []plan.Family{plan.IPv4, plan.IPv6}
	tests := []struct {
		name       string
		families   []plan.Family
		node       *v1.Node
		steps      func(h *ProxyHealth, c *clock)
		healthz    int
		livez      int
		healthzOut string
		livezOut   string
	}{{
		name:       "before the first sync",
		families:   dual,
		node:       objects.Node("node1", ""),
		steps:      func(h *ProxyHealth, c *clock) { h.QueuedUpdate(plan.IPv4); c.advance(time.Hour) },
		healthz:    200,
		livez:      200,
		healthzOut: `{"lastUpdated":"2026-11-22T07:25:46.9Z","currentTime":"2026-11-22T07:25:46.9Z","nodeEligible":true,"healthy":true}`,
		livezOut:   `{"lastUpdated":"2026-11-22T07:25:46.9Z","currentTime":"2026-11-22T07:25:46.9Z","healthy":true}`,
	}, {
		name:     "node unknown",
		families: dual,
		steps: func(h *ProxyHealth, c *clock) {
			h.Updated(plan.IPv4)
		},
		healthz:    503,
		livez:      200,
		healthzOut: `{"lastUpdated":"2026-11-22T06:25:46.9Z","currentTime":"2026-11-22T06:25:46.9Z","nodeEligible":false,"healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true}}}`,
		livezOut:   `{"lastUpdated":"2026-11-22T06:25:46.9Z","currentTime":"2026-11-22T06:25:46.9Z","healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true}}}`,
	}, {
		name:     "healthy dual-stack, pending change young",
		families: dual,
		node:     objects.Node("node1", ""),
		steps: func(h *ProxyHealth, c *clock) {
			h.Updated(plan.IPv4)
			c.advance(40 * time.Millisecond)
			h.Updated(plan.IPv6)
			c.advance(19570 * time.Millisecond)
			h.QueuedUpdate(plan.IPv4)
			c.advance(2*syncPeriod - time.Nanosecond)
		},
		healthz:    200,
		livez:      200,
		healthzOut: `{"lastUpdated":"2026-11-22T06:27:06.509999999Z","currentTime":"2026-11-22T06:27:06.509999999Z","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true},"IPv6":{"lastUpdated":"2026-11-22T06:25:46.94Z","healthy":true}}}`,
		livezOut:   `{"lastUpdated":"2026-11-22T06:27:06.509999999Z","currentTime":"2026-11-22T06:27:06.509999999Z","healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true},"IPv6":{"lastUpdated":"2026-11-22T06:25:46.94Z","healthy":true}}}`,
	}, {
		name:     "pending change of one family older than 2 x syncPeriod",
		families: dual,
		node:     objects.Node("node1", ""),
		steps: func(h *ProxyHealth, c *clock) {
			h.Updated(plan.IPv4)
			h.Updated(plan.IPv6)
			c.advance(time.Second)
			h.QueuedUpdate(plan.IPv6)
			c.advance(time.Second)
			h.QueuedUpdate(plan.IPv6) // the oldest pending change counts
			c.advance(2*syncPeriod - time.Second)
		},
		healthz:    503,
		livez:      503,
		healthzOut: `{"lastUpdated":"2026-11-22T06:25:46.9Z","currentTime":"2026-11-22T06:26:47.9Z","nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true},"IPv6":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":false}}}`,
		livezOut:   `{"lastUpdated":"2026-11-22T06:25:46.9Z","currentTime":"2026-11-22T06:26:47.9Z","healthy":false,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true},"IPv6":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":false}}}`,
	}, {
		name:     "late change then a sync: healthy again",
		families: dual[:1],
		node:     objects.Node("node1", ""),
		steps: func(h *ProxyHealth, c *clock) {
			h.Updated(plan.IPv4)
			h.QueuedUpdate(plan.IPv4)
			c.advance(time.Hour)
			h.Updated(plan.IPv4)
			h.Updated(plan.IPv6) // not a family of this proxy: ignored
		},
		healthz:    200,
		livez:      200,
		healthzOut: `{"lastUpdated":"2026-11-22T07:25:46.9Z","currentTime":"2026-11-22T07:25:46.9Z","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T07:25:46.9Z","healthy":true}}}`,
		livezOut:   `{"lastUpdated":"2026-11-22T07:25:46.9Z","currentTime":"2026-11-22T07:25:46.9Z","healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T07:25:46.9Z","healthy":true}}}`,
	}, {
		name:       "node being deleted",
		families:   dual[:1],
		node:       deleting(),
		steps:      func(h *ProxyHealth, c *clock) { h.Updated(plan.IPv4); c.advance(time.Second) },
		healthz:    503,
		livez:      200,
		healthzOut: `{"lastUpdated":"2026-11-22T06:25:46.9Z","currentTime":"2026-11-22T06:25:47.9Z","nodeEligible":false,"healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true}}}`,
		livezOut:   `{"lastUpdated":"2026-11-22T06:25:47.9Z","currentTime":"2026-11-22T06:25:47.9Z","healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true}}}`,
	}, {
		name:       "node tainted by the autoscaler",
		families:   dual[:1],
		node:       tainted(),
		steps:      func(h *ProxyHealth, c *clock) { h.Updated(plan.IPv4) },
		healthz:    503,
		livez:      200,
		healthzOut: `{"lastUpdated":"2026-11-22T06:25:46.9Z","currentTime":"2026-11-22T06:25:46.9Z","nodeEligible":false,"healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true}}}`,
		livezOut:   `{"lastUpdated":"2026-11-22T06:25:46.9Z","currentTime":"2026-11-22T06:25:46.9Z","healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true}}}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{t: start}
			h := NewProxyHealth(tt.families, syncPeriod, c.now)
			var answers []string
			h.OnAnswer = func(path string, code int) { answers = append(answers, path+" "+http.StatusText(code)) }
			if tt.node != nil {
				h.SyncNode(tt.node)
			}
			tt.steps(h, c)
			checkAnswer(t, h.Handler(), "/healthz", tt.healthz, tt.healthzOut)
			checkAnswer(t, h.Handler(), "/livez", tt.livez, tt.livezOut)
			if h.Healthy() != (tt.livez == 200) {
				t.Errorf("Healthy() = %v, /livez answered %d", h.Healthy(), tt.livez)
			}
			want := []string{"/healthz " + http.StatusText(tt.healthz), "/livez " + http.StatusText(tt.livez)}
			if len(answers) != 2 || answers[0] != want[0] || answers[1] != want[1] {
				t.Errorf("OnAnswer saw %q, want %q", answers, want)
			}
		})
	}
}

func checkAnswer(t *testing.T, h http.Handler, path string, code int, body string) {
	t.Helper()
	gotCode, hdr, gotBody := answerOf(t, h, path)
	if gotCode != code || gotBody != body {
		t.Errorf("%s: %d %s\nwant %d %s", path, gotCode, gotBody, code, body)
	}
	wantHeaders := map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"}
	for k, v := range wantHeaders {
		if hdr.Get(k) != v {
			t.Errorf("%s: header %s = %q, want %q", path, k, hdr.Get(k), v)
		}
	}
}

func TestProxyHealthNodeChanges(t *testing.T) {
	c := &clock{t: start}
	h := NewProxyHealth([]plan.Family{plan.IPv4}, syncPeriod, c.now)
	h.Updated(plan.IPv4)
	for _, step := range []struct {
		node *v1.Node
		code int
	}{{nil, 503}, {objects.Node("node1", ""), 200}, {tainted(), 503}, {objects.Node("node1", ""), 200}, {deleting(), 503}, {nil, 503}} {
		h.SyncNode(step.node)
		if code, _, body := answerOf(t, h.Handler(), "/healthz"); code != step.code {
			t.Errorf("node %v: /healthz %d %s, want %d", step.node != nil, code, body, step.code)
		}
	}
}

func TestProxyHealthOtherPaths(t *testing.T) {
	h := NewProxyHealth([]plan.Family{plan.IPv4}, syncPeriod, nil)
	for _, path := range []string{"/", "/metrics", "/healthz/x", "/livezz"} {
		if code, _, _ := answerOf(t, h.Handler(), path); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
}

// TestProxyHealthBroken: a duty the proxy cannot do makes /healthz 503 with
// the reason, and Healthy false; /livez stays 200, its body kube-proxy's.
func TestProxyHealthBroken(t *testing.T) {
	c := &clock{t: start}
	h := NewProxyHealth([]plan.Family{plan.IPv4}, syncPeriod, c.now)
	h.SyncNode(objects.Node("node1", ""))
	h.Updated(plan.IPv4)
	h.Broken("conntrack cleanup is off: no netlink")
	checkAnswer(t, h.Handler(), "/healthz", 503, `{"lastUpdated":"2026-11-22T06:25:46.9Z","currentTime":"2026-11-22T06:25:46.9Z","nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true}},"problems":["conntrack cleanup is off: no netlink"]}`)
	checkAnswer(t, h.Handler(), "/livez", 200, `{"lastUpdated":"2026-11-22T06:25:46.9Z","currentTime":"2026-11-22T06:25:46.9Z","healthy":true,"status":{"IPv4":{"lastUpdated":"2026-11-22T06:25:46.9Z","healthy":true}}}`)
	if h.Healthy() {
		t.Error("Healthy() = true while broken")
	}
}
