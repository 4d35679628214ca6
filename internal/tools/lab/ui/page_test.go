package ui

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/svcproxy/svcproxy/internal/testkit/browser"
	"github.com/svcproxy/svcproxy/internal/tools/lab/ui/uitest"
)

// The size the page must stay correct at: 3 nodes × 30 pods, 100 Services.
const (
	scaleNodes    = 3
	scalePods     = 30
	scaleServices = 100
)

func requireBrowser(t testing.TB) {
	t.Helper()
	if _, err := browser.Executable(); err != nil {
		t.Skip(err)
	}
}

// TestPageAtScale opens the page of a made-up cluster of 3 nodes × 30 pods
// and 100 Services in Chromium: every node, pod, Service and endpoint is
// drawn where it belongs, the counters move, the health-check answers are
// drawn per node, and a trace where the kernel and the plan disagree shows
// the path the plan does not allow in red. (The real lab's page is tested
// by the walkthrough's end-to-end test.)
func TestPageAtScale(t *testing.T) {
	requireBrowser(t)
	c := newCluster(t, scaleNodes, scalePods, scaleServices)
	url, _ := c.serve(t)
	p := uitest.Open(t, url)
	for _, n := range c.st.Nodes {
		drawn, err := uitest.Pods(p, n.Name)
		if err != nil || !slices.Equal(drawn, c.pods[n.Name]) {
			t.Errorf("%s: pods drawn %v (%v), want %v", n.Name, drawn, err, c.pods[n.Name])
		}
	}
	counts, err := browser.Eval[map[string]int](p, `({
		services: document.querySelectorAll('.svc').length,
		endpoints: document.querySelectorAll('.svc tr[data-endpoint]').length,
		terminating: document.querySelectorAll('g.pod.terminating').length,
		notready: document.querySelectorAll('g.pod.notready').length,
		healthOK: document.querySelectorAll('g.node[data-node=node1] [data-health][data-status="200"]').length,
		health503: document.querySelectorAll('g.node[data-node=node2] [data-health][data-status="503"]').length,
	})`)
	want := map[string]int{"services": scaleServices, "endpoints": scaleServices * scaleNodes, "terminating": 9, "notready": 3,
		"healthOK": len(c.local), "health503": len(c.local)}
	if err != nil || fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("drawn: %v (%v), want %v", counts, err, want)
	}
	if err := p.WaitFor(`[...document.querySelectorAll('.svc tr[data-endpoint]')].some(e => +e.dataset.window > 0)`, 10*time.Second); err != nil {
		t.Errorf("no endpoint's counter moved: %v", err)
	}
	checkDisagreement(t, p)
	ms, _ := browser.Eval[[]float64](p, `[svcproxyPage.firstDrawMs, svcproxyPage.lastDrawMs]`)
	t.Logf("%d nodes × %d pods and %d Services: first drawing %.1f ms, the latest (an update) %.1f ms", scaleNodes, scalePods, scaleServices, ms[0], ms[1])
}

// checkDisagreement traces a packet and wants the fake kernel's third path,
// to an endpoint the plan lacks, in red, with the problem said.
func checkDisagreement(t *testing.T, p *browser.Page) {
	t.Helper()
	if verdict, err := uitest.Trace(p, "client", "203.0.113.1:80|TCP", ""); err != nil || verdict != "FORWARD" {
		t.Fatalf("trace: %q, %v", verdict, err)
	}
	got, err := browser.Eval[map[string]any](p, `({
		branches: document.querySelectorAll('.branch').length,
		red: [...document.querySelectorAll('.branch.disagree')].map(b => b.textContent.includes('10.244.3.2:8080')),
		problems: document.querySelector('#trace-problems')?.textContent ?? '',
		verdictRed: document.querySelector('#trace-verdict').classList.contains('disagree'),
	})`)
	if err != nil || fmt.Sprint(got["branches"]) != "3" || fmt.Sprint(got["red"]) != "[true]" || got["verdictRed"] != true ||
		!strings.Contains(fmt.Sprint(got["problems"]), "which the plan does not") {
		t.Errorf("trace drawn: %v (%v)", got, err)
	}
}

// BenchmarkPageRender loads the page of 3 nodes × 30 pods and 100
// Services (or, with SVCPROXY_UI_URL, the page at that address: a running
// lab's) and reports, from the browser's performance timing, the time from
// the start of navigation to the end of the first complete drawing, and
// how long that drawing took.
func BenchmarkPageRender(b *testing.B) {
	requireBrowser(b)
	url := os.Getenv("SVCPROXY_UI_URL")
	if url == "" {
		url, _ = newCluster(b, scaleNodes, scalePods, scaleServices).serve(b)
	}
	p := browser.Open(b, url, 1400, 1000)
	var first, draw float64
	for b.Loop() {
		if err := p.Do(chromedp.Reload()); err != nil {
			b.Fatal(err)
		}
		if err := p.WaitFor(`performance.getEntriesByName('svcproxy-first-draw').length > 0`, 20*time.Second); err != nil {
			b.Fatal(err)
		}
		t, err := browser.Eval[[]float64](p, `[performance.getEntriesByName('svcproxy-first-draw')[0].startTime, svcproxyPage.firstDrawMs]`)
		if err != nil {
			b.Fatal(err)
		}
		first += t[0]
		draw += t[1]
	}
	b.ReportMetric(first/float64(b.N), "ms-to-first-draw")
	b.ReportMetric(draw/float64(b.N), "ms-first-draw")
}
