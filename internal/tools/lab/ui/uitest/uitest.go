// Package uitest reads and drives the lab's page in a headless browser,
// for the page's tests: what the page drew (nodes, pods, Services,
// endpoint counters, health-check answers) and the trace form. It knows
// the page's element ids and data attributes, so that tests do not.
package uitest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/testkit/browser"
)

// Open opens the page at url and waits for its first drawing.
func Open(tb testing.TB, url string) *browser.Page {
	tb.Helper()
	p := browser.Open(tb, url, 1400, 1000)
	if err := p.WaitFor(`window.svcproxyPage && svcproxyPage.draws > 0`, 30*time.Second); err != nil {
		tb.Fatal(err)
	}
	return p
}

// js quotes s as a JavaScript string.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Nodes lists the nodes drawn.
func Nodes(p *browser.Page) ([]string, error) {
	return browser.Eval[[]string](p, `[...document.querySelectorAll('g.node')].map(e => e.dataset.node)`)
}

// Pods lists the pods drawn inside a node, "namespace/name".
func Pods(p *browser.Page, node string) ([]string, error) {
	return browser.Eval[[]string](p, fmt.Sprintf(`[...document.querySelectorAll('g.node[data-node=%s] g.pod')].map(e => e.dataset.pod)`, js(node)))
}

// Services lists the Services drawn, "namespace/name".
func Services(p *browser.Page) ([]string, error) {
	return browser.Eval[[]string](p, `[...document.querySelectorAll('.svc')].map(e => e.dataset.service)`)
}

// Counter is an endpoint's counters as drawn.
type Counter struct {
	Window int `json:"window"` // new connections in the last seconds
	Total  int `json:"total"`  // since the page's server started
}

// Endpoints returns the counters drawn for a Service's endpoints, by
// endpoint ("TCP 10.244.1.3:3000").
func Endpoints(p *browser.Page, service string) (map[string]Counter, error) {
	return browser.Eval[map[string]Counter](p, fmt.Sprintf(`Object.fromEntries([...document.querySelectorAll('.svc[data-service=%s] tr[data-endpoint]')]
		.map(e => [e.dataset.endpoint, {window: +e.dataset.window, total: +e.dataset.total}]))`, js(service)))
}

// HealthChecks returns, by node, the status drawn for a Service's
// health-check node port (0: no answer or not drawn).
func HealthChecks(p *browser.Page, service string) (map[string]int, error) {
	return browser.Eval[map[string]int](p, fmt.Sprintf(`Object.fromEntries([...document.querySelectorAll('g.node')]
		.map(n => [n.dataset.node, +(n.querySelector('[data-health=' + CSS.escape(%s) + ']')?.dataset.status ?? 0)]))`, js(service)))
}

// Select clicks a Service's card, as a person picking it.
func Select(p *browser.Page, service string) error {
	_, err := browser.Eval[bool](p, fmt.Sprintf(`(document.querySelector('.svc[data-service=%s]')?.click(), true)`, js(service)))
	return err
}

// Trace picks a source (client, node:NAME, pod:NAMESPACE/NAME), a
// destination (an option's value, "IP:PORT|PROTO") and the node the
// client's packet goes through ("" as the load balancer routes it), asks
// for the trace, and returns the kernel's verdict drawn, or the error the
// page shows.
func Trace(p *browser.Page, src, dst, via string) (string, error) {
	picked, err := browser.Eval[string](p, fmt.Sprintf(`(() => {
		const set = (id, v) => { const s = document.getElementById(id); s.value = v; s.dispatchEvent(new Event('change')); return s.value === v; };
		if (!set('trace-src', %s)) return 'no source ' + %s;
		if (!set('trace-dst', %s)) return 'no destination ' + %s;
		if (%s && !set('trace-via', %s)) return 'no node ' + %s;
		document.getElementById('trace-result').innerHTML = '';
		document.getElementById('trace-form').requestSubmit();
		return '';
	})()`, js(src), js(src), js(dst), js(dst), js(via), js(via), js(via)))
	if err != nil {
		return "", err
	}
	if picked != "" {
		return "", fmt.Errorf("trace form: %s", picked)
	}
	if err := p.WaitFor(`document.querySelector('#trace-verdict, #trace-error')`, 30*time.Second); err != nil {
		return "", err
	}
	out, err := browser.Eval[[]string](p, `[document.querySelector('#trace-verdict')?.dataset.action ?? '', document.querySelector('#trace-error')?.textContent ?? '']`)
	if err != nil {
		return "", err
	}
	if out[1] != "" {
		return "", fmt.Errorf("the page's trace: %s", out[1])
	}
	return out[0], nil
}
