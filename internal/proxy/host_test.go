package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/proxy/config"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/logtest"
)

// TestOOMScoreAdj: --oom-score-adj reaches this process's
// /proc/self/oom_score_adj, as kube-proxy writes it.
func TestOOMScoreAdj(t *testing.T) {
	before, err := os.ReadFile(oomScoreAdjPath)
	if err != nil {
		t.Skip(err)
	}
	cur, _ := strconv.Atoi(strings.TrimSpace(string(before)))
	target := cur + 1 // raising needs no privilege
	if target > 1000 {
		target = cur - 1
	}
	t.Cleanup(func() { os.WriteFile(oomScoreAdjPath, before, 0o644) })
	opts, err := config.Parse([]string{"--oom-score-adj=" + strconv.Itoa(target), "--conntrack-max-per-core=0"})
	if err != nil {
		t.Fatal(err)
	}
	logs := logtest.New(0)
	env := Env{Log: logs.Logger(), Do: func(func() error) error { return nil }} // no sysctls here
	if err := setUpHost(opts.Config, plan.Config{}, env); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(oomScoreAdjPath)
	if got := strings.TrimSpace(string(after)); got != strconv.Itoa(target) {
		t.Errorf("oom_score_adj = %s, want %d; logs %q", got, target, logs.Lines())
	}
}

// TestWatchConfig: a --config file whose content changes ends the proxy
// with kube-proxy's error; writing the same content again does not.
func TestWatchConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, []byte("mode: iptables\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tick := make(chan time.Time)
	done := make(chan error, 1)
	go func() { done <- watchConfig(ctx, path, tick) }()
	// tick delivers one tick; once the next is taken, the watch has
	// compared the file after the first.
	tickTwice := func() error {
		for range 2 {
			select {
			case tick <- time.Now():
			case err := <-done:
				return err
			}
		}
		return nil
	}
	os.WriteFile(path, []byte("mode: iptables\n"), 0o644)
	if err := tickTwice(); err != nil {
		t.Fatalf("the same content ended the watch: %v", err)
	}
	os.WriteFile(path, []byte("mode: nftables\n"), 0o644)
	err := tickTwice()
	if err == nil {
		t.Fatal("the watch went on after the file changed")
	}
	if !errors.Is(err, errConfigChanged) || !strings.Contains(err.Error(), path) {
		t.Fatalf("watch ended with %v, want the file named and errConfigChanged", err)
	}
}

// TestSetVerbosity: PUT /debug/flags/v (with enableProfiling) sets the
// running process's verbosity, as kube-proxy's does.
func TestSetVerbosity(t *testing.T) {
	h := withProfiling(http.NotFoundHandler())
	put := func(body string) (int, string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/debug/flags/v", strings.NewReader(body)))
		return w.Code, w.Body.String()
	}
	if code, body := put("x"); code != http.StatusBadRequest {
		t.Errorf("PUT x: %d %s, want 400", code, body)
	}
	if code, body := put("0"); code != http.StatusOK || body != "successfully set klog.logging.verbosity to 0" {
		t.Errorf("PUT 0: %d %s", code, body)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/debug/flags/v", nil))
	if w.Code != http.StatusNotAcceptable {
		t.Errorf("GET: %d, want 406", w.Code)
	}
}
