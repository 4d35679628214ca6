package controlplane

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/svcproxy/svcproxy/internal/supervise"
)

// process is one control-plane binary running, with its log.
type process struct {
	*supervise.Child
	name    string
	logPath string
}

// start runs the binary name from Options.Dir, inside Options.Netns,
// logging to WorkDir/name.log and to Options.Logs. Attached, it dies with
// this process even if Stop never runs (a panic, a test timeout);
// detached, it outlives it.
func (c *ControlPlane) start(name string, args []string) (*process, error) {
	log := c.path(name + ".log")
	opts := supervise.Options{Name: name, Netns: c.opts.Netns, Detach: c.opts.Detached, Log: log}
	if c.logs != nil {
		opts.Also = c.logs
	}
	child, err := supervise.Start(exec.Command(filepath.Join(c.opts.Dir, name), args...), opts)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return &process{Child: child, name: name, logPath: log}, nil
}

// exited reports whether the child has exited and been reaped.
func (p *process) exited() bool {
	select {
	case <-p.Done():
		return true
	default:
		return false
	}
}

// stop stops the child's process group (SIGTERM, then SIGKILL after grace)
// and waits until the child is reaped.
func (p *process) stop(grace time.Duration) {
	supervise.Stop(grace, p.Child)
	<-p.Done()
}

// exitError describes how the child ended, with the tail of its log.
func (p *process) exitError() error {
	return fmt.Errorf("controlplane: %s exited (%v); log %s ends:\n%s", p.name, p.Err(), p.logPath, Tail(p.logPath, 4096))
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
