// Package browser opens pages in a headless Chromium (Debian's chromium
// package) for tests and benchmarks, driven with chromedp: the lab page's
// end-to-end test and its render benchmark. Chromium runs with a fresh
// profile and the flags that keep it from reaching the network by itself
// (no background networking, component updates, sync or QUIC), and as
// root, so without its sandbox.
package browser

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// Executable finds Chromium, or says why it cannot.
func Executable() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", errors.New("no chromium (Debian package chromium; hack/deps.sh installs it)")
}

// Page is one tab of a headless Chromium.
type Page struct {
	tb  testing.TB
	ctx context.Context
}

// Open starts Chromium with a window of width × height, opens url, and
// stops Chromium when tb ends; if tb failed by then, it first saves a
// screenshot (see Screenshot) and logs its path.
func Open(tb testing.TB, url string, width, height int) *Page {
	tb.Helper()
	exe, err := Executable()
	if err != nil {
		tb.Fatal(err)
	}
	var log strings.Builder
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe), chromedp.UserDataDir(tb.TempDir()), chromedp.WindowSize(width, height),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.CombinedOutput(&log),
	}
	for _, f := range []string{"disable-quic", "no-first-run", "disable-background-networking", "disable-component-update", "disable-sync", "no-default-browser-check"} {
		opts = append(opts, chromedp.Flag(f, true))
	}
	alloc, stopAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, stop := chromedp.NewContext(alloc)
	p := &Page{tb: tb, ctx: ctx}
	tb.Cleanup(func() {
		if tb.Failed() {
			p.saveFailure()
		}
		stop()
		stopAlloc()
		if tb.Failed() && log.Len() > 0 {
			tb.Logf("chromium's output:\n%s", tail(log.String(), 4096))
		}
	})
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil { // the first Run starts the browser: no timeout on it
		tb.Fatalf("open %s in chromium: %v", url, err)
	}
	return p
}

// Eval evaluates a JavaScript expression and decodes its value into T.
func Eval[T any](p *Page, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// WaitFor waits until the JavaScript expression is true, or limit passes.
func (p *Page) WaitFor(expr string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(p.ctx, limit+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(limit)))
	if err != nil {
		return fmt.Errorf("waiting %v for %s: %w", limit, expr, err)
	}
	return nil
}

// Do runs chromedp actions (clicks, form values) on the page.
func (p *Page) Do(actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Screenshot writes a PNG of the whole page to path. The window is made as
// tall as the page first, so that what a page leaves unrendered while off
// screen (CSS content-visibility) is drawn too.
func (p *Page) Screenshot(path string) error {
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	size, err := chromedp.Run(ctx, chromedp.Evaluate[[]int64](`[document.documentElement.scrollWidth, document.documentElement.scrollHeight]`))
	if err != nil {
		return err
	}
	png, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) ([]byte, error) {
		full := emulation.SetDeviceMetricsOverrideParams{Width: size[0], Height: size[1], DeviceScaleFactor: 1}
		if _, err := cdp.Call(ctx, t, emulation.SetDeviceMetricsOverride, full); err != nil {
			return nil, err
		}
		defer cdp.Call(ctx, t, emulation.ClearDeviceMetricsOverride, cdp.Empty{})
		afterFrame := `new Promise(done => requestAnimationFrame(() => setTimeout(done)))`
		if _, err := chromedp.Evaluate[chromedp.Void](afterFrame, chromedp.EvalAwaitPromise)(ctx, t); err != nil {
			return nil, err
		}
		return chromedp.FullScreenshot(100)(ctx, t)
	})
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}

// saveFailure saves a screenshot into OutputDir and logs its path.
func (p *Page) saveFailure() {
	path := filepath.Join(OutputDir(p.tb), "page.png")
	if err := p.Screenshot(path); err != nil {
		p.tb.Logf("no screenshot of the page: %v", err)
		return
	}
	p.tb.Logf("screenshot of the page when the test failed: %s", path)
}

// OutputDir is where a test keeps files for the people reading its
// failure: its artifact directory under `go test -artifacts -outputdir
// DIR` (as `make test` runs), else a new directory under the temporary
// directory, kept.
func OutputDir(tb testing.TB) string {
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		if t, ok := tb.(interface{ ArtifactDir() string }); ok {
			return t.ArtifactDir()
		}
	}
	dir, err := os.MkdirTemp("", "svcproxy-test-")
	if err != nil {
		return os.TempDir()
	}
	return dir
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
