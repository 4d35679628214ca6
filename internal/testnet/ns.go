package testnet

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// NS is a named network namespace (one `ip netns add` name).
type NS struct {
	Name string
}

func (ns *NS) String() string { return ns.Name }

// Do runs fn on an OS thread switched into ns and returns fn's error.
// Sockets fn creates belong to ns for their whole life and may be used
// from any goroutine after Do returns; processes fn starts run in ns.
// fn runs on another goroutine than the caller's: it must not call
// t.Fatal, and goroutines it starts do not inherit ns.
func (ns *NS) Do(fn func() error) error {
	target, err := netns.GetFromName(ns.Name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ns.Name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() { errc <- doLocked(target, fn) }()
	if err := <-errc; err != nil {
		return fmt.Errorf("in %s: %w", ns.Name, err)
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

// Exec runs `ip netns exec <ns> args...` and returns its combined output.
// On failure the error holds the output too.
func (ns *NS) Exec(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", ns.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
