package lab

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/svcproxy/svcproxy/internal/supervise"
)

// A lab process outlives `lab up`: it runs in a session of its own, writes
// to <Dir>/logs/<name>.log, and is recorded in <Dir>/pids/<name> (a
// supervise.Registry), so that Down stops it only if that very process
// still runs.

// Process is a recorded lab process.
type Process = supervise.Recorded

// registry is where the lab's processes are recorded.
func (s *State) registry() supervise.Registry { return supervise.Registry{Dir: s.path("pids")} }

// startProcess starts bin with args as the lab process name, inside the
// network namespace netns ("" for this one); it is reaped if it dies while
// this process runs.
func (s *State) startProcess(netns, name, bin string, args ...string) error {
	_, err := s.StartProcess(netns, name, nil, bin, args...)
	return err
}

// StartProcess starts bin with args as the lab process name, inside the
// network namespace netns ("" for this one), with the environment env (nil
// for this process's), and records it; the caller waits for it, then
// calls ForgetProcess. A process recorded under the same name that still
// runs (left by a kubelet that restarted) is stopped first. Forked from a
// thread inside netns, the child starts there; its mount namespace stays
// the machine's, so namespaces it adds (a kubelet's pods) are visible to
// everyone.
func (s *State) StartProcess(netns, name string, env []string, bin string, args ...string) (*supervise.Child, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return s.start(netns, name, cmd)
}

// start starts cmd as the lab process name inside netns and records it;
// cmd's output goes to the process's log.
func (s *State) start(netns, name string, cmd *exec.Cmd) (*supervise.Child, error) {
	if err := s.stopRecorded(name); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.path("logs"), 0o755); err != nil {
		return nil, err
	}
	reg := s.registry()
	return supervise.Start(cmd, supervise.Options{Name: name, Netns: netns, Detach: true, Log: s.path("logs", name+".log"), Record: &reg})
}

// ForgetProcess removes name's record, once the process is gone.
func (s *State) ForgetProcess(name string) error { return s.registry().Forget(name) }

// stopRecorded stops the process recorded as name, if it still runs.
func (s *State) stopRecorded(name string) error {
	p, err := s.registry().Get(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return supervise.Stop(stopGrace, p)
}

// Processes lists the recorded processes.
func (s *State) Processes() ([]Process, error) { return s.registry().List() }

// stopProcesses stops every recorded process still running (SIGTERM, then
// SIGKILL to those left after grace) and forgets them all. A kubelet
// being stopped may still start (and record) a container's process after
// the records were read, so they are read again until none runs: the
// kubelets are gone after the first round, so the second finds the last.
func (s *State) stopProcesses(grace time.Duration) error {
	for range 3 {
		procs, err := s.Processes()
		if err != nil {
			return err
		}
		var running []supervise.Process
		for _, p := range procs {
			if p.Alive() {
				running = append(running, p)
			}
		}
		if len(running) == 0 {
			break
		}
		if err := supervise.Stop(grace, running...); err != nil {
			return err
		}
	}
	return os.RemoveAll(s.path("pids"))
}

// path returns a path inside the lab's directory.
func (s *State) path(elem ...string) string {
	return filepath.Join(append([]string{s.Dir}, elem...)...)
}
