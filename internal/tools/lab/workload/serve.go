package workload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeout bounds how long a program waits for in-flight requests
// once its context is cancelled.
const ShutdownTimeout = 5 * time.Second

// serveHTTP serves h on each TCP port until ctx is cancelled, then shuts
// down gracefully. It returns early only if a listener fails.
func serveHTTP(ctx context.Context, env Env, ports []int32, h http.Handler, ready func()) error {
	listeners, err := listenTCP(env, ports)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           closeWhenTerminating(env.Terminating, h),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(logWriter(env.Logf), "", 0),
	}
	served := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { served <- srv.Serve(l) }()
	}
	signal(ready)

	running := len(listeners)
	var failed error
	select {
	case <-ctx.Done():
	case failed = <-served:
		running--
	}
	shutdown(srv)
	for range running {
		<-served // each Serve closes its listener before returning
	}
	if failed != nil && !errors.Is(failed, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", failed)
	}
	return nil
}

// listenTCP opens a listener on each port, or none if one fails.
func listenTCP(env Env, ports []int32) ([]net.Listener, error) {
	var listeners []net.Listener
	for _, port := range ports {
		l, err := env.Listen("tcp", env.address(port))
		if err != nil {
			closeAll(listeners)
			return nil, fmt.Errorf("listen on tcp port %d: %w", port, err)
		}
		listeners = append(listeners, l)
	}
	return listeners, nil
}

func closeAll(listeners []net.Listener) {
	for _, l := range listeners {
		l.Close()
	}
}

// shutdown waits at most ShutdownTimeout for in-flight requests, then drops
// whatever is left.
func shutdown(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		srv.Close()
	}
}

// closeWhenTerminating asks clients not to reuse the connection while the
// pod is terminating; net/http then closes it after the response.
func closeWhenTerminating(terminating func() bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if terminating() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

func signal(ready func()) {
	if ready != nil {
		ready()
	}
}

// logWriter sends the http.Server's own errors (bad requests, panics) to the
// container's log.
type logWriter func(format string, args ...any)

func (w logWriter) Write(p []byte) (int, error) {
	w("%s", bytes.TrimSuffix(p, []byte("\n")))
	return len(p), nil
}
