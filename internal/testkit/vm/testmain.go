package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// insideEnv marks a test binary that Main started inside a VM.
const insideEnv = "SVCPROXY_IN_VM"

// Inside reports whether this process runs in a VM that Main started.
func Inside() bool { return os.Getenv(insideEnv) == "1" }

// Main is a test package's TestMain for tests that need kernel features
// this machine may lack. If need() says the running kernel has them, the
// tests run here. Otherwise the same test binary runs again, with the same
// -test.* flags, in one VM for the whole package, and its output and exit
// status become this process's. It never returns.
//
// A VM that cannot boot fails the package with the reason; it is never a
// skip. Files the tests write (a -test.coverprofile, say) stay in the VM.
func Main(m *testing.M, need func() error) {
	needErr := need()
	switch {
	case needErr == nil:
		os.Exit(m.Run())
	case Inside():
		fmt.Fprintf(os.Stderr, "vm: the VM's kernel still lacks what the tests need: %v\n", needErr)
		os.Exit(1)
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vm: %v\n", err)
		os.Exit(1)
	}
	res, err := Run(context.Background(), Command{
		Args:    append([]string{self}, os.Args[1:]...),
		Env:     append(os.Environ(), insideEnv+"=1"),
		Timeout: vmTimeout(os.Args[1:]),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "vm: running the tests in a VM: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "vm: ran the tests in a VM (boot %.1fs, in all %.1fs), as this kernel lacks what they need: %s\n",
		res.Boot.Seconds(), res.Elapsed.Seconds(), strings.ReplaceAll(needErr.Error(), "\n", "; "))
	os.Exit(res.ExitCode)
}

// vmTimeout gives the VM the tests' own -test.timeout and two minutes to
// boot and to report a timeout itself; 30 minutes without one.
func vmTimeout(args []string) time.Duration {
	for _, a := range args {
		v, ok := strings.CutPrefix(a, "-test.timeout=")
		if !ok {
			continue
		}
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d + 2*time.Minute
		}
	}
	return 30 * time.Minute
}

// IPVS says whether the running kernel has IPVS, loading ip_vs first if
// it can. It is the need of Main for IPVS tests.
func IPVS() error {
	const proc = "/proc/net/ip_vs"
	if _, err := os.Stat(proc); err == nil {
		return nil
	}
	out, err := exec.Command("modprobe", "ip_vs").CombinedOutput()
	if _, statErr := os.Stat(proc); statErr == nil {
		return nil
	}
	return errors.Join(fmt.Errorf("no %s", proc), fmt.Errorf("modprobe ip_vs: %v: %s", err, strings.TrimSpace(string(out))))
}

// RunTest runs the calling test, and only it, in a VM when need says this
// kernel lacks what it needs, and reports whether it did: the caller then
// returns, its result being the VM's. It returns false, and the test goes
// on here, when the kernel has what it needs (inside the VM too; a VM
// whose kernel still lacks it fails the test). This is Main for one test
// of a package whose other tests run here: the same test binary runs again
// in the VM with -test.run naming exactly t (the other -test.* flags kept),
// its output logged to t line by line, env added to its environment.
//
// A VM that cannot boot fails the test with the reason; it is never a skip.
func RunTest(t *testing.T, need func() error, cmd Command, env ...string) bool {
	t.Helper()
	needErr := need()
	switch {
	case needErr == nil:
		return false
	case Inside():
		t.Fatalf("vm: the VM's kernel still lacks what the test needs: %v", needErr)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Args = append([]string{self}, testArgs(os.Args[1:], t.Name())...)
	cmd.Env = append(append(os.Environ(), insideEnv+"=1"), env...)
	if cmd.Timeout == 0 {
		cmd.Timeout = vmTimeout(os.Args[1:])
	}
	out := &lineLog{t: t}
	cmd.Stdout, cmd.Stderr = out, out
	res, err := Run(t.Context(), cmd)
	out.flush()
	if err != nil {
		t.Fatalf("vm: running %s in a VM: %v", t.Name(), err)
	}
	t.Logf("vm: ran %s in a VM (boot %.1fs, in all %.1fs), as this kernel lacks what it needs: %s",
		t.Name(), res.Boot.Seconds(), res.Elapsed.Seconds(), strings.ReplaceAll(needErr.Error(), "\n", "; "))
	if res.ExitCode != 0 {
		t.Fatalf("vm: %s failed in the VM (exit status %d); its output is above", t.Name(), res.ExitCode)
	}
	return true
}

// testArgs keeps a test binary's -test.* flags but those choosing tests,
// and adds a -test.run matching exactly the test named name (a subtest's
// name holds a slash per level).
func testArgs(args []string, name string) []string {
	var keep []string
	for i := 0; i < len(args); i++ {
		flag, _, hasValue := strings.Cut(args[i], "=")
		switch "-" + strings.TrimLeft(flag, "-") { // -flag or --flag
		case "-test.run", "-test.skip", "-test.bench", "-test.fuzz", "-test.list":
			if !hasValue {
				i++ // "-test.run X": the value is the next argument
			}
			continue
		}
		keep = append(keep, args[i])
	}
	var levels []string
	for _, level := range strings.Split(name, "/") {
		levels = append(levels, "^"+regexp.QuoteMeta(level)+"$")
	}
	return append(keep, "-test.run="+strings.Join(levels, "/"))
}

// lineLog sends what it is written to t.Log, a line at a time.
type lineLog struct {
	t       *testing.T
	mu      sync.Mutex
	partial []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		line, rest, ok := bytes.Cut(l.partial, []byte("\n"))
		if !ok {
			return len(p), nil
		}
		l.t.Log("vm| " + string(line))
		l.partial = rest
	}
}

func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.t.Log("vm| " + string(l.partial))
		l.partial = nil
	}
}
