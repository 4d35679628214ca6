package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// A lab process outlives `lab up`: it runs in a session of its own, writes
// to <Dir>/logs/<name>.log, and is recorded in <Dir>/pids/<name> as
// "<pid> <start time>", so that Down signals it only if that very process
// still runs (a recycled PID has another start time).

// startProcess starts bin with args as the lab process name, inside the
// network namespace netns ("" for this one), and reaps it if it dies while
// this process runs.
func (s *State) startProcess(netns, name, bin string, args ...string) error {
	cmd, err := s.StartProcess(netns, name, nil, bin, args...)
	if err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}

// StartProcess starts bin with args as the lab process name, inside the
// network namespace netns ("" for this one), with the environment env (nil
// for this process's), and records it; the caller
// waits for it, then calls ForgetProcess. A process recorded under the
// same name that still runs (left by a kubelet that restarted) is stopped
// first.
func (s *State) StartProcess(netns, name string, env []string, bin string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return cmd, s.start(netns, name, cmd)
}

// start starts cmd as the lab process name inside netns and records it;
// cmd's output goes to the process's log.
func (s *State) start(netns, name string, cmd *exec.Cmd) error {
	if err := s.stopRecorded(name); err != nil {
		return err
	}
	if err := os.MkdirAll(s.path("logs"), 0o755); err != nil {
		return err
	}
	log, err := os.OpenFile(s.path("logs", name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := cmd.Start
	if netns != "" {
		// Forked from a thread inside netns, the child starts there; its
		// mount namespace stays the machine's, so namespaces it adds (a
		// kubelet's pods) are visible to everyone.
		start = func() error { return nsrun.Do(netns, cmd.Start) }
	}
	if err := start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	if err := s.recordProcess(netns, name, cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	return nil
}

// ForgetProcess removes name's record, once the process is gone.
func (s *State) ForgetProcess(name string) error {
	err := os.Remove(s.path("pids", name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// stopRecorded stops the process recorded as name, if it still runs.
func (s *State) stopRecorded(name string) error {
	p, err := readRecord(s.path("pids", name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return stopAll([]Process{p}, stopGrace)
}

// recordProcess writes name's pid file: "<pid> <start time> [<netns>]".
func (s *State) recordProcess(netns, name string, pid int) error {
	start, err := startTime(pid)
	if err != nil {
		return fmt.Errorf("%s (pid %d): %w", name, pid, err)
	}
	if err := os.MkdirAll(s.path("pids"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(s.path("pids", name), fmt.Appendf(nil, "%d %d %s\n", pid, start, netns), 0o644)
}

// Process is a recorded lab process.
type Process struct {
	Name    string
	PID     int
	Netns   string // the network namespace it started in; "" for the machine's
	Running bool   // the recorded process (same PID and start time) is alive
}

// Processes lists the recorded processes.
func (s *State) Processes() ([]Process, error) {
	files, err := filepath.Glob(s.path("pids", "*"))
	if err != nil {
		return nil, err
	}
	var procs []Process
	for _, f := range files {
		p, err := readRecord(f)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// readRecord reads one pid file and checks whether its process still runs.
func readRecord(path string) (Process, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Process{}, err
	}
	var pid int
	var start uint64
	var netns string
	if n, err := fmt.Sscan(string(data), &pid, &start, &netns); n < 2 {
		return Process{}, fmt.Errorf("%s: %w", path, err)
	}
	now, err := startTime(pid)
	return Process{Name: filepath.Base(path), PID: pid, Netns: netns, Running: err == nil && now == start}, nil
}

// stopProcesses sends SIGTERM to every recorded process still running,
// then SIGKILL to those left after grace, and forgets them all. A kubelet
// being stopped may still start (and record) a container's process after
// the records were read, so they are read again until none runs: the
// kubelets are gone after the first round, so the second finds the last.
func (s *State) stopProcesses(grace time.Duration) error {
	for range 3 {
		procs, err := s.Processes()
		if err != nil {
			return err
		}
		if !anyRunning(procs) {
			break
		}
		if err := stopAll(procs, grace); err != nil {
			return err
		}
	}
	return os.RemoveAll(s.path("pids"))
}

// stopAll sends SIGTERM to every process of procs still running, then
// SIGKILL to those left after grace, and waits (bounded) until they are gone.
func stopAll(procs []Process, grace time.Duration) error {
	signalAll(procs, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && anyRunning(procs) {
		time.Sleep(50 * time.Millisecond)
	}
	signalAll(procs, syscall.SIGKILL)
	for range 100 { // SIGKILL is quick; bounded anyway
		if !anyRunning(procs) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var errs []error
	for _, p := range procs {
		if stillRunning(p) {
			errs = append(errs, fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID))
		}
	}
	return errors.Join(errs...)
}

func signalAll(procs []Process, sig syscall.Signal) {
	for _, p := range procs {
		if stillRunning(p) {
			syscall.Kill(p.PID, sig)
		}
	}
}

func anyRunning(procs []Process) bool {
	for _, p := range procs {
		if stillRunning(p) {
			return true
		}
	}
	return false
}

// stillRunning reports whether p, recorded as running, still is the same
// process and has not become a zombie.
func stillRunning(p Process) bool {
	if !p.Running {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if err != nil {
		return false
	}
	fields := statFields(string(data))
	return len(fields) > 2 && fields[0] != "Z"
}

// startTime reads a process's start time (clock ticks since boot) from
// /proc/PID/stat.
func startTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	fields := statFields(string(data))
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// statFields returns the fields of /proc/PID/stat after the command name
// (which may hold spaces): state first, start time 20th.
func statFields(stat string) []string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(stat[i+1:])
}

// path returns a path inside the lab's directory.
func (s *State) path(elem ...string) string {
	return filepath.Join(append([]string{s.Dir}, elem...)...)
}
