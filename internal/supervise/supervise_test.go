package supervise

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/internal/netwire"
)

// start starts a child for t and makes sure it is gone when t ends.
func start(t *testing.T, opts Options, args ...string) *Child {
	t.Helper()
	c, err := Start(exec.Command(args[0], args[1:]...), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Stop(0, c) })
	return c
}

// waitExec waits until pid runs the program named command (a shell that
// set its traps and exec'd).
func waitExec(t *testing.T, pid int, command string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(data)) == command {
			return
		}
	}
	t.Fatalf("pid %d never ran %s", pid, command)
}

// TestStop: a child that heeds SIGTERM goes at once; one that ignores it
// goes at SIGKILL, after the grace period; both are reaped, and signalling
// them afterwards hits nothing.
func TestStop(t *testing.T) {
	polite := start(t, Options{}, "sleep", "60")
	stubborn := start(t, Options{}, "sh", "-c", `trap "" TERM; exec sleep 61`)
	waitExec(t, stubborn.Pid(), "sleep")
	begin := time.Now()
	if err := Stop(300*time.Millisecond, polite, stubborn); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < 300*time.Millisecond {
		t.Errorf("Stop took %v: the stubborn child cannot have waited for SIGKILL", took)
	}
	for _, c := range []*Child{polite, stubborn} {
		if err := c.Wait(context.Background()); err != nil {
			t.Errorf("%s: %v", c, err)
		}
		if err := c.Signal(syscall.SIGKILL); err != nil {
			t.Errorf("signal after reaping: %v", err)
		}
	}
	if !strings.Contains(polite.Err().Error(), "terminated") || !strings.Contains(stubborn.Err().Error(), "killed") {
		t.Errorf("exits: polite %v, stubborn %v", polite.Err(), stubborn.Err())
	}
}

// TestOptions: a child leads a process group of its own, or a session when
// detached; it starts in the namespace asked for; its output is appended
// to the log and copied.
func TestOptions(t *testing.T) {
	attached := start(t, Options{}, "sleep", "60")
	detached := start(t, Options{Detach: true}, "sleep", "60")
	if pgid, _ := syscall.Getpgid(attached.Pid()); pgid != attached.Pid() {
		t.Errorf("attached child's group %d, want its own %d", pgid, attached.Pid())
	}
	if sid, _ := unix.Getsid(detached.Pid()); sid != detached.Pid() {
		t.Errorf("detached child's session %d, want its own %d", sid, detached.Pid())
	}

	name := fmt.Sprintf("spt-%d-0-supervise", os.Getpid())
	if err := netwire.Add(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netwire.Delete(name) })
	log := filepath.Join(t.TempDir(), "log")
	os.WriteFile(log, []byte("before\n"), 0o644)
	var also bytes.Buffer
	c := start(t, Options{Netns: name, Log: log, Also: &also}, "readlink", "/proc/self/ns/net")
	c.Wait(context.Background())
	want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", os.Getpid()))
	got, _ := os.ReadFile(log)
	if lines := strings.Split(strings.TrimSpace(string(got)), "\n"); len(lines) != 2 || lines[0] != "before" || lines[1] == want {
		t.Errorf("log %q: want the line before and a namespace other than ours (%s)", got, want)
	}
	if !strings.HasPrefix(also.String(), "net:[") {
		t.Errorf("copy of the output: %q", also.String())
	}
}

// TestRegistry: a recorded process is found, signalled and stopped while
// it is the one recorded; a record whose start time does not match (a
// recycled PID) is never signalled.
func TestRegistry(t *testing.T) {
	r := Registry{Dir: filepath.Join(t.TempDir(), "pids")}
	c := start(t, Options{Detach: true}, "sleep", "60")
	if err := r.Record("sleeper", c.Pid(), "somewhere"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(r.Dir, "recycled"), fmt.Appendf(nil, "%d 1\n", os.Getpid()), 0o644)
	procs, err := r.List()
	if err != nil || len(procs) != 2 {
		t.Fatalf("List = %v, %v", procs, err)
	}
	recycled, sleeper := procs[0], procs[1]
	if !sleeper.Running || sleeper.Netns != "somewhere" || recycled.Running || recycled.Alive() {
		t.Fatalf("records: %+v", procs)
	}
	if err := recycled.Signal(syscall.SIGTERM); err != nil { // would end this test if it were sent
		t.Fatal(err)
	}
	if err := Stop(time.Second, sleeper, recycled); err != nil {
		t.Fatal(err)
	}
	if c.Wait(context.Background()); sleeper.Alive() {
		t.Errorf("sleeper still runs")
	}
	if err := r.Forget("sleeper"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("sleeper"); !os.IsNotExist(err) {
		t.Errorf("Get after Forget: %v", err)
	}
	// A child that exits at once is recorded before it can be reaped.
	for range 20 {
		quick := start(t, Options{Name: "quick", Record: &r}, "true")
		if p, err := r.Get("quick"); err != nil || p.PID != quick.Pid() {
			t.Fatalf("quick child's record: %+v, %v", p, err)
		}
	}
}
