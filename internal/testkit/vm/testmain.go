package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
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
