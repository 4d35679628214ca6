package walkthrough

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	twotier "github.com/svcproxy/svcproxy/examples/two-tier"
	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// heading starts a step.
func (t *tour) heading(title string) {
	fmt.Fprintf(t.w, "\n== %s ==\n\n", title)
}

// say prints a line.
func (t *tour) say(format string, args ...any) {
	fmt.Fprintf(t.w, format+"\n", args...)
}

// table prints counts by name, sorted, with a bar each.
func (t *tour) table(counts map[string]int) {
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		t.say("  %-40s %3d %s", n, counts[n], strings.Repeat("#", counts[n]))
	}
}

// kubectl prints and runs a kubectl command against the lab.
func (t *tour) kubectl(ctx context.Context, args ...string) error {
	return t.kubectlIn(ctx, nil, args...)
}

// kubectlIn runs kubectl with stdin; it prints the command, then its output.
func (t *tour) kubectlIn(ctx context.Context, stdin io.Reader, args ...string) error {
	cmd := t.st.Kubectl(ctx, args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if stdin == nil {
		t.say("$ svcproxy lab kubectl %s", shellWords(args))
	}
	t.say("%s", strings.TrimRight(string(out), "\n"))
	if err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// apply applies example files as `kubectl apply -f examples/two-tier/F`.
func (t *tour) apply(ctx context.Context, files ...string) error {
	for _, f := range files {
		data, err := twotier.Files.ReadFile(f)
		if err != nil {
			return err
		}
		t.say("$ svcproxy lab kubectl apply -f examples/two-tier/%s", f)
		if err := t.kubectlIn(ctx, bytes.NewReader(data), "apply", "-f", "-"); err != nil {
			return err
		}
	}
	return nil
}

// reply is the jobs API's answer.
type reply struct {
	Job, Pod, Client, Version string
	Backend                   struct{ Job, Pod, Client, Version string }
	raw                       string
}

// getJSON sends GET url from netns and decodes the jobs API's answer.
func (t *tour) getJSON(ctx context.Context, netns, url string) (reply, error) {
	var r reply
	code, body, err := nsrun.Get(ctx, netns, url, lab.RequestTimeout)
	if err != nil {
		return r, err
	}
	r.raw = strings.TrimSpace(string(body))
	if code != http.StatusOK {
		return r, fmt.Errorf("%d: %s", code, r.raw)
	}
	return r, json.Unmarshal(body, &r)
}

// askHealth asks every node's health-check node port from the client.
func (t *tour) askHealth(ctx context.Context, port int) []HealthCheck {
	var out []HealthCheck
	for _, n := range t.st.Nodes {
		hc := HealthCheck{Node: n.Name}
		if code, local, err := t.st.AskHealthCheck(ctx, n, port, lab.RequestTimeout); err == nil {
			hc.Status, hc.LocalEndpoints = code, local
		}
		out = append(out, hc)
	}
	return out
}

// shellWords joins args as a shell reads them back: an argument with
// characters the shell would interpret goes in single quotes.
func shellWords(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = a
		if strings.ContainsAny(a, " \"'{}[]$*?;&|<>()\\`!#~") {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(quoted, " ")
}
