package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"k8s.io/component-base/logs"

	"github.com/svcproxy/svcproxy/internal/proxy/agent"
	"github.com/svcproxy/svcproxy/internal/proxy/config"
	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/proxy/metrics"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// ListenRetry is how often a server that could not listen tries again
// when bindAddressHardFail is false, as kube-proxy's do.
const ListenRetry = 5 * time.Second

// server is the healthz or the metrics server.
type server struct {
	name    string // "healthz" or "metrics"
	addr    string // its configured bind address; "" disables it
	port    int    // the port of a bare IP
	handler http.Handler
	// reason is the Warning event kube-proxy records on its Node when the
	// server cannot listen and bindAddressHardFail makes it exit.
	reason string
}

// serve runs s until ctx ends. When its address cannot be bound: with
// hardFail it records a Warning event and returns the error, and svcproxy
// exits, as kube-proxy does; else it logs, counts the failure and retries
// every ListenRetry while the proxy goes on without the server.
func serve(ctx context.Context, env Env, s server, hardFail bool, m *metrics.Metrics, ev events) error {
	addr, err := config.BindAddress(s.addr, s.port)
	if err != nil || addr == "" {
		return err
	}
	for failures := 0; ; failures++ {
		l, err := env.Listen("tcp", addr)
		if err == nil {
			if failures > 0 {
				env.Log.Info("Server listening after all", "server", s.name, "address", addr, "failures", failures)
			}
			return serveOn(ctx, l, s.handler)
		}
		err = fmt.Errorf("%s server: listen on %s: %w", s.name, addr, err)
		m.ListenFailed(s.name)
		if hardFail {
			ev.warning(ctx, s.reason, "StartKubeProxy", err.Error())
			return fmt.Errorf("%w (bindAddressHardFail)", err)
		}
		if failures == 0 {
			env.Log.Error(err, "Server cannot listen; going on without it and retrying (bindAddressHardFail is false)", "server", s.name, "retry", ListenRetry)
		} else {
			env.Log.V(2).Info("Server still cannot listen", "server", s.name, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(ListenRetry):
		}
	}
}

// serveOn serves h on l until ctx ends.
func serveOn(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// withExplain serves `svcproxy status` and `svcproxy trace` their answers
// under /svcproxy/ on the metrics server.
func withExplain(h, ex http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.Handle("/svcproxy/", ex)
	return mux
}

// explainPlan lends the agent's last plan and sync status to the explain
// handlers.
func explainPlan(a *agent.Agent) func(fn func(*plan.Plan, explain.SyncStatus)) {
	return func(fn func(*plan.Plan, explain.SyncStatus)) {
		a.WithPlan(func(p *plan.Plan, st agent.Status) {
			sync := explain.SyncStatus{At: st.Last, Took: st.Took.String(), Full: st.Full, Syncs: st.Syncs, Failures: st.Failures, InProgress: st.InProgress}
			if st.Err != nil {
				sync.Error = st.Err.Error()
			}
			fn(p, sync)
		})
	}
}

// withProfiling adds Go's /debug/pprof/ handlers and PUT /debug/flags/v,
// which sets the log verbosity of the running process, as kube-proxy's
// enableProfiling does on its metrics server.
func withProfiling(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/flags/v", setVerbosity)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// setVerbosity answers PUT /debug/flags/v with a verbosity in the body.
func setVerbosity(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method != http.MethodPut {
		w.WriteHeader(http.StatusNotAcceptable)
		fmt.Fprint(w, "unsupported http method")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "error reading request body: %v", err)
		return
	}
	msg, err := logs.GlogSetter(strings.TrimSpace(string(body)))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		msg = err.Error()
	}
	fmt.Fprint(w, msg)
}
