package controlplane

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// process is one child started in its own process group, with its output
// appended to a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the child has been reaped
	err     error         // Wait's result, valid after done
}

// spawner forks children from one locked OS thread. Attached children get
// Pdeathsig=SIGKILL so they die with the test binary even if it never runs
// Stop (a panic or a test timeout); Linux sends that signal when the forking
// thread exits, so the thread must stay alive as long as the children.
// Detached children start a session of their own instead and outlive us.
// With a netns the thread lives in that network namespace, and so do the
// children it forks.
type spawner struct {
	reqs     chan func(error) // called on the thread, with the error of entering netns
	quit     chan struct{}
	detached bool
	netns    string
}

// newSpawner starts the locked thread.
func newSpawner(detached bool, netns string) *spawner {
	s := &spawner{reqs: make(chan func(error)), quit: make(chan struct{}), detached: detached, netns: netns}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	if s.netns == "" {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		s.serve(nil)
		return
	}
	// nsrun.Do keeps the thread locked inside the namespace until serve
	// returns; if entering fails, every request gets the error.
	if err := nsrun.Do(s.netns, func() error { s.serve(nil); return nil }); err != nil {
		s.serve(err)
	}
}

// serve runs requests until quit.
func (s *spawner) serve(enterErr error) {
	for {
		select {
		case f := <-s.reqs:
			f(enterErr)
		case <-s.quit:
			return
		}
	}
}

// close releases the thread; call it only when every child is gone.
func (s *spawner) close() { close(s.quit) }

// start runs bin with args from the spawner thread, logging to logPath and,
// if extra is non-nil, to extra as well.
func (s *spawner) start(name, bin string, args []string, logPath string, extra io.Writer) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	var out io.Writer = logFile
	if extra != nil {
		out = io.MultiWriter(logFile, extra)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if s.detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	errc := make(chan error, 1)
	s.reqs <- func(enterErr error) {
		if enterErr != nil {
			errc <- enterErr
			return
		}
		errc <- cmd.Start()
	}
	if err := <-errc; err != nil {
		logFile.Close()
		return nil, fmt.Errorf("controlplane: start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// pid is the child's process ID, which is also its process group ID.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the child has exited and been reaped.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's process group, then SIGKILL after grace,
// and waits until the child is reaped. Signals go only to a group whose
// leader has not been reaped yet, so a recycled PID is never hit.
func (p *process) stop(grace time.Duration) {
	if p.signal(syscall.SIGTERM) {
		select {
		case <-p.done:
			return
		case <-time.After(grace):
		}
		p.signal(syscall.SIGKILL)
	}
	<-p.done
}

// signal sends sig to the process group unless the leader is reaped; it
// reports whether it tried.
func (p *process) signal(sig syscall.Signal) bool {
	if p.exited() {
		return false
	}
	err := syscall.Kill(-p.pid(), sig)
	return err == nil || !errors.Is(err, syscall.ESRCH)
}

// exitError describes how the child ended, with the tail of its log.
func (p *process) exitError() error {
	return fmt.Errorf("controlplane: %s exited (%v); log %s ends:\n%s", p.name, p.err, p.logPath, Tail(p.logPath, 4096))
}

// Tail returns up to n trailing bytes of the file at path (a log), or why
// it cannot.
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return err.Error()
		}
	}
	data, _ := io.ReadAll(f)
	return string(data)
}
