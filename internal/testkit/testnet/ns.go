package testnet

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// NS is a named network namespace (one `ip netns add` name).
type NS struct {
	Name string
}

func (ns *NS) String() string { return ns.Name }

// Do runs fn inside ns; see nsrun.Do. fn must not call t.Fatal.
func (ns *NS) Do(fn func() error) error { return nsrun.Do(ns.Name, fn) }

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
