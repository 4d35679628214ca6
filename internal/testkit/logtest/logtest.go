// Package logtest gives tests a logr.Logger that keeps every line it is
// given, so a test can check what the code under test logged, and at which
// verbosity.
package logtest

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
)

// Recorder keeps the lines of the loggers it hands out.
type Recorder struct {
	verbosity int
	mu        sync.Mutex
	lines     []string
}

// New returns a recorder whose loggers keep the lines logged up to
// verbosity v (0: only what a default -v shows).
func New(v int) *Recorder { return &Recorder{verbosity: v} }

// Logger returns a logger writing to r.
func (r *Recorder) Logger() logr.Logger { return logr.New(&sink{r: r}) }

// LoggerTo returns a logger writing to r and to t's log, so that a failing
// test shows what the code under test said.
func (r *Recorder) LoggerTo(t testing.TB) logr.Logger { return logr.New(&sink{r: r, echo: t.Log}) }

// Lines returns a copy of the lines so far, each "msg key=value ...", an
// error as err=<its text>.
func (r *Recorder) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// Count counts the lines that contain every one of subs.
func (r *Recorder) Count(subs ...string) int {
	n := 0
	for _, l := range r.Lines() {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			n++
		}
	}
	return n
}

func (r *Recorder) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
}

// sink is a logr.LogSink that formats plainly: values with %v, so a test
// can look for an error's text as it is.
type sink struct {
	r      *Recorder
	echo   func(args ...any) // also gets each line, if set
	name   string
	values []any
}

func (s *sink) Init(logr.RuntimeInfo)  {}
func (s *sink) Enabled(level int) bool { return level <= s.r.verbosity }

func (s *sink) Info(level int, msg string, kv ...any) {
	s.add(s.format(msg, kv))
}

func (s *sink) Error(err error, msg string, kv ...any) {
	s.add(s.format(msg, append(kv, "err", err)))
}

func (s *sink) add(line string) {
	s.r.add(line)
	if s.echo != nil {
		s.echo(line)
	}
}

func (s *sink) format(msg string, kv []any) string {
	var b strings.Builder
	if s.name != "" {
		b.WriteString(s.name + ": ")
	}
	b.WriteString(msg)
	all := append(append([]any{}, s.values...), kv...)
	for i := 0; i+1 < len(all); i += 2 {
		fmt.Fprintf(&b, " %v=%v", all[i], all[i+1])
	}
	return b.String()
}

func (s *sink) WithValues(kv ...any) logr.LogSink {
	return &sink{r: s.r, echo: s.echo, name: s.name, values: append(append([]any{}, s.values...), kv...)}
}

func (s *sink) WithName(name string) logr.LogSink {
	if s.name != "" {
		name = s.name + "/" + name
	}
	return &sink{r: s.r, echo: s.echo, name: name, values: s.values}
}
