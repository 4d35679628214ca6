package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Registry records processes in a directory, one file per name holding
// "<pid> <start time> [<netns>]", so that another process can find and
// stop exactly them later, even after the one that started them died: a
// recycled PID has another start time.
type Registry struct{ Dir string }

// Record writes down the running process pid as name, started inside
// netns ("" for the machine's).
func (r Registry) Record(name string, pid int, netns string) error {
	start, err := startTime(pid)
	if err != nil {
		return fmt.Errorf("record %s (pid %d): %w", name, pid, err)
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.Dir, name), fmt.Appendf(nil, "%d %d %s\n", pid, start, netns), 0o644)
}

// Forget removes name's record, if any.
func (r Registry) Forget(name string) error {
	err := os.Remove(filepath.Join(r.Dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Get reads name's record; the error is os.ErrNotExist's if there is none.
func (r Registry) Get(name string) (Recorded, error) {
	return readRecord(filepath.Join(r.Dir, name))
}

// List reads every record.
func (r Registry) List() ([]Recorded, error) {
	files, err := filepath.Glob(filepath.Join(r.Dir, "*"))
	if err != nil {
		return nil, err
	}
	var procs []Recorded
	for _, f := range files {
		p, err := readRecord(f)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// Recorded is a process found in a Registry.
type Recorded struct {
	Name  string
	PID   int
	Start uint64 // in clock ticks since boot, as /proc/PID/stat has it
	Netns string // the network namespace it started in; "" for the machine's
	// Running says whether the recorded process (same PID and start time)
	// ran, not as a zombie, when the record was read.
	Running bool
}

func readRecord(path string) (Recorded, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Recorded{}, err
	}
	p := Recorded{Name: filepath.Base(path)}
	if n, err := fmt.Sscan(string(data), &p.PID, &p.Start, &p.Netns); n < 2 {
		return Recorded{}, fmt.Errorf("%s: %w", path, err)
	}
	p.Running = p.Alive()
	return p, nil
}

func (p Recorded) String() string { return fmt.Sprintf("%s (pid %d)", p.Name, p.PID) }

// Alive reports whether the recorded process runs: the same PID and start
// time, and not a zombie.
func (p Recorded) Alive() bool {
	state, start, err := stat(p.PID)
	return err == nil && start == p.Start && state != "Z"
}

// Signal sends sig to the process if it is still the one recorded.
func (p Recorded) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", p, err)
	}
	return nil
}

// Wait polls until the process is gone (or a zombie, for its parent to
// reap), or ctx ends.
func (p Recorded) Wait(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for p.Alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// startTime reads a process's start time.
func startTime(pid int) (uint64, error) {
	_, start, err := stat(pid)
	return start, err
}

// stat reads a process's state and start time (clock ticks since boot)
// from /proc/PID/stat. The command name, second, may hold spaces and
// parentheses: the fields that follow start after its last ')'.
func stat(pid int) (state string, start uint64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return "", 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	return fields[0], start, err
}
