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

// Exec runs args inside ns and returns its combined output. On failure the
// error holds the output too. The command is forked from a thread inside
// ns, rather than through `ip netns exec`, which costs a fork of ip more.
func (ns *NS) Exec(ctx context.Context, args ...string) (string, error) {
	var out []byte
	err := ns.Do(func() (err error) {
		out, err = exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", ns.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
