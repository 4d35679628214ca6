// Package nsrun runs Go code inside a named network namespace (one that
// `ip netns add` created), for the tests, the demo and `svcproxy --netns`,
// which program one namespace's kernel while the process lives in another.
package nsrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread switched into the namespace name and returns
// fn's error. Sockets fn creates belong to the namespace for their whole
// life and may be used from any goroutine after Do returns; processes fn
// starts run in it. fn runs on another goroutine than the caller's, and
// goroutines it starts do not inherit the namespace.
func Do(name string, fn func() error) error {
	target, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() { errc <- doLocked(target, fn) }()
	if err := <-errc; err != nil {
		return fmt.Errorf("in %s: %w", name, err)
	}
	return nil
}

// doLocked runs fn with its goroutine's thread switched into target. The
// thread is unlocked only once it is back in its original namespace; if
// switching fails it stays locked, so the runtime retires it when the
// goroutine ends instead of running other goroutines in the wrong place.
func doLocked(target netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns: %w", err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(fnErr, fmt.Errorf("restore netns: %w", err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Listen opens a listener inside the namespace name.
func Listen(name, network, address string) (l net.Listener, err error) {
	err = Do(name, func() error {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// Dial connects to address from inside the namespace name ("" for the
// caller's own).
func Dial(ctx context.Context, name, network, address string) (c net.Conn, err error) {
	if name == "" {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
	err = Do(name, func() error {
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// ListenPacket opens a packet socket inside the namespace name.
func ListenPacket(name, network, address string) (c net.PacketConn, err error) {
	err = Do(name, func() error {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// HTTPClient returns an HTTP client whose connections start inside the
// namespace name ("" for the caller's own). It opens a new connection for
// every request, so that a Service proxy balances each one and nothing is
// left idle, and gives up on a request after timeout.
func HTTPClient(name string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			return Dial(ctx, name, network, address)
		},
	}}
}

// Get sends GET url from inside the namespace name ("" for the caller's
// own), on a connection of its own, and returns the status and the body.
// ctx bounds it, and so does timeout unless it is 0.
func Get(ctx context.Context, name, url string, timeout time.Duration) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := HTTPClient(name, timeout).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}
