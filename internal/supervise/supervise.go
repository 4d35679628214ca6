// Package supervise starts and stops the processes svcproxy's tools run
// beside themselves: the control plane's etcd and API server, the lab's
// kubelets, proxies and pod containers, the bench's agent.
//
// Two kinds of handle are stopped the same way (Stop: SIGTERM, a grace
// period, SIGKILL, gone): a Child this process started and reaps, and a
// Recorded process that another process started and wrote down in a
// Registry, found again by PID and start time (as `lab down` finds what
// `lab up` and the kubelets left running). Signal and Wait are the seams:
// a child is signalled only until it is reaped and a recorded process only
// while its start time matches, so a recycled PID is never hit.
package supervise

import (
	"context"
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

// Process is a process that can be signalled and waited for.
type Process interface {
	// Signal sends sig if the process still runs.
	Signal(sig syscall.Signal) error
	// Wait returns nil once the process is gone, or ctx's error.
	Wait(ctx context.Context) error
	fmt.Stringer
}

// killWait bounds the wait for a process to go after SIGKILL, which it
// cannot catch: only a process stuck in the kernel outlasts it.
const killWait = 5 * time.Second

// Stop stops procs together: SIGTERM, up to grace for them to exit,
// SIGKILL for those left. It returns once all are gone, or with an error
// naming those that outlived SIGKILL.
func Stop(grace time.Duration, procs ...Process) error {
	signalAll(procs, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	left := waitAll(ctx, procs)
	cancel()
	if len(left) == 0 {
		return nil
	}
	signalAll(left, syscall.SIGKILL)
	ctx, cancel = context.WithTimeout(context.Background(), killWait)
	defer cancel()
	var errs []error
	for _, p := range waitAll(ctx, left) {
		errs = append(errs, fmt.Errorf("%s survived SIGKILL", p))
	}
	return errors.Join(errs...)
}

func signalAll(procs []Process, sig syscall.Signal) {
	for _, p := range procs {
		p.Signal(sig) // one that is gone already needs nothing
	}
}

// waitAll waits for every process until ctx ends and returns those left.
func waitAll(ctx context.Context, procs []Process) []Process {
	var left []Process
	for _, p := range procs {
		if p.Wait(ctx) != nil {
			left = append(left, p)
		}
	}
	return left
}

// Options say how Start runs a child.
type Options struct {
	// Name names the child in messages; the command's base name if "".
	Name string
	// Netns starts the child inside that named network namespace ("" for
	// this process's).
	Netns string
	// Detach starts the child in a session of its own, so that it
	// outlives this process. Otherwise it leads a process group of its own
	// and is killed (SIGKILL) if this process dies without stopping it.
	Detach bool
	// Log, if set, receives the child's output, appended.
	Log string
	// Also, if set, receives a copy of the output.
	Also io.Writer
	// Record, if set, is where the child is written down under Name before
	// it can be reaped, so that even a child that exits at once is found
	// (and a child that cannot be recorded is not left running).
	Record *Registry
}

// Child is a process this one started. Signals go to its process group.
type Child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the child is reaped
	err  error         // how it ended, valid after done
}

// Start starts cmd as opts say, and reaps it when it exits.
//
// The child is forked, and waited for, from one locked OS thread (inside
// opts.Netns if set): Linux sends the parent-death signal when the forking
// thread exits, not the process, so that thread must not exit first.
func Start(cmd *exec.Cmd, opts Options) (*Child, error) {
	c := &Child{name: opts.Name, cmd: cmd, done: make(chan struct{})}
	if c.name == "" {
		c.name = cmd.Path
	}
	closeLog, err := c.output(opts)
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if opts.Detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	started := make(chan error, 1)
	run := func() error {
		if err := cmd.Start(); err != nil {
			started <- err
			return nil
		}
		if opts.Record != nil {
			if err := opts.Record.Record(c.name, cmd.Process.Pid, opts.Netns); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				started <- err
				return nil
			}
		}
		started <- nil
		c.err = cmd.Wait()
		closeLog()
		close(c.done)
		return nil
	}
	go func() {
		if opts.Netns == "" {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			run()
		} else if err := nsrun.Do(opts.Netns, run); err != nil {
			started <- err // entering failed, run never ran (or it ran and this is dropped)
		}
	}()
	if err := <-started; err != nil {
		closeLog()
		return nil, fmt.Errorf("start %s: %w", c.name, err)
	}
	return c, nil
}

// output points the command's output at opts.Log and opts.Also, and
// returns what closes the log.
func (c *Child) output(opts Options) (func(), error) {
	var outs []io.Writer
	closeLog := func() {}
	if opts.Log != "" {
		f, err := os.OpenFile(opts.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		outs, closeLog = append(outs, f), func() { f.Close() }
	}
	if opts.Also != nil {
		outs = append(outs, opts.Also)
	}
	switch len(outs) {
	case 1: // a file goes to the child as it is, with no copying
		c.cmd.Stdout, c.cmd.Stderr = outs[0], outs[0]
	case 2:
		w := io.MultiWriter(outs...)
		c.cmd.Stdout, c.cmd.Stderr = w, w
	}
	return closeLog, nil
}

func (c *Child) String() string { return fmt.Sprintf("%s (pid %d)", c.name, c.Pid()) }

// Pid is the child's process ID, also its process group's.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Done is closed once the child has exited and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err is how the child ended (cmd.Wait's error); valid after Done.
func (c *Child) Err() error { return c.err }

// Signal sends sig to the child's process group, unless the child has
// been reaped: its PID may belong to another process by then.
func (c *Child) Signal(sig syscall.Signal) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	if err := syscall.Kill(-c.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", c, err)
	}
	return nil
}

// Wait returns nil once the child is reaped, or ctx's error.
func (c *Child) Wait(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
