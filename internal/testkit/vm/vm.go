// Package vm runs one command as root in a throwaway virtual machine whose
// kernel has what this machine's may lack (IPVS, ipset): Debian's
// linux-image-amd64 kernel and modules, cached under the repository's
// .cache/vm, booted by qemu with TCG (no KVM needed).
//
// The guest sees this machine's whole file system read-only (9p) under a
// writable tmpfs overlay, so any binary here runs there unchanged: a test
// binary, go itself, or svcproxy's lab. Writes stay in the guest and vanish
// with it. The command runs in the caller's working directory with the
// caller's environment; its standard output and error stream back as they
// come, and its exit status is the Result's. The guest has its own kernel,
// so the network namespaces, IPVS services and ipsets the command makes
// never touch this machine.
//
// Boot takes about 15 s on two cores. A VM that cannot boot is an error
// carrying the tail of its console, never a skip. Main (testmain.go) runs
// a test package inside a VM when this kernel lacks what it needs.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/internal/cachedir"
	"github.com/svcproxy/svcproxy/internal/filelock"
	"github.com/svcproxy/svcproxy/internal/timescale"
)

// Command is what to run in the VM.
type Command struct {
	// Args is the command and its arguments; Args[0] is looked up in the
	// guest's PATH, which is the host's file system.
	Args []string
	// Dir is the working directory; "" means the caller's.
	Dir string
	// Env is the environment; nil means the caller's (os.Environ()).
	Env []string
	// Stdout and Stderr receive the command's output as it comes; nil
	// means os.Stdout and os.Stderr.
	Stdout, Stderr io.Writer
	// Timeout bounds the whole run, boot included; the VM is killed when
	// it passes. Zero means 30 minutes.
	Timeout time.Duration
	// CPUs and MemoryMiB size the VM; zero means 2 and 4096.
	CPUs, MemoryMiB int
	// Modules are loaded before the command runs, besides DefaultModules.
	Modules []string
	// CacheDir holds the kernel; "" means CacheDir().
	CacheDir string
	// Log receives progress (a kernel download); nil means os.Stderr.
	Log io.Writer
}

// DefaultModules are loaded in every VM: IPVS with every scheduler,
// conntrack, ipset with the set types kube-proxy uses, dummy interfaces
// (kube-ipvs0), and what the test networks are made of.
var DefaultModules = []string{
	"nf_conntrack", "ip_vs",
	"ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_lblc", "ip_vs_lblcr",
	"ip_vs_dh", "ip_vs_sh", "ip_vs_sed", "ip_vs_nq", "ip_vs_mh",
	"ip_set", "ip_set_hash_ip", "ip_set_hash_ipport", "ip_set_hash_ipportip",
	"ip_set_hash_ipportnet", "ip_set_hash_net", "ip_set_hash_netport", "ip_set_bitmap_port",
	"xt_set", "xt_ipvs", "dummy", "veth", "bridge",
}

// GuestTimeScale is how much longer than on this machine a command in the
// VM may wait for a condition before it gives up (package timescale): the
// VM emulates its CPU (TCG), and the lab's control plane, for one, took
// 15 times as long to become ready there. A Command's own $SVCPROXY_TIME_SCALE wins.
const GuestTimeScale = "15"

// Result is how a command that ran in the VM ended.
type Result struct {
	// ExitCode is the command's exit status (128+N if signal N killed it).
	ExitCode int
	// Boot is the time from starting qemu to starting the command.
	Boot time.Duration
	// Elapsed is the time from starting qemu to the VM's end.
	Elapsed time.Duration
}

// Run boots a VM, runs cmd in it and returns how it ended. The error is
// non-nil only if the command could not run to its end (no qemu, no
// kernel, a VM that did not boot or was killed by the timeout); it then
// carries the tail of the VM's console, whose whole log is kept.
func Run(ctx context.Context, cmd Command) (Result, error) {
	if len(cmd.Args) == 0 {
		return Result{}, errors.New("vm: no command")
	}
	cmd = withDefaults(cmd)
	if cmd.CacheDir == "" {
		dir, err := CacheDir()
		if err != nil {
			return Result{}, fmt.Errorf("vm: %w", err)
		}
		cmd.CacheDir = dir
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return Result{}, fmt.Errorf("vm: qemu-system-x86_64 not found (install qemu-system-x86: hack/deps.sh): %w", err)
	}
	k, err := Prepare(ctx, cmd.CacheDir, cmd.Log)
	if err != nil {
		return Result{}, err
	}
	unlock, err := oneAtATime(cmd)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	r, err := newRun(cmd, k)
	if err != nil {
		return Result{}, err
	}
	res, err := r.boot(ctx, qemu)
	r.finish(err == nil)
	return res, err
}

// oneAtATime waits until no other VM of this cache runs (go test runs
// packages in parallel, and each IPVS package boots its own): on a small
// machine two emulated VMs at once would each take twice as long, and
// the waits inside them are stretched for one.
func oneAtATime(cmd Command) (unlock func(), err error) {
	lock := filepath.Join(cmd.CacheDir, "run.lock")
	if unlock, ok, err := filelock.TryLock(lock); err != nil || ok {
		return unlock, err
	}
	fmt.Fprintf(cmd.Log, "vm: waiting for another VM to end (%s)\n", lock)
	return filelock.Lock(lock)
}

func withDefaults(cmd Command) Command {
	if cmd.Dir == "" {
		cmd.Dir, _ = os.Getwd()
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	if !slices.ContainsFunc(cmd.Env, func(kv string) bool { return strings.HasPrefix(kv, timescale.Env+"=") }) {
		cmd.Env = append(slices.Clone(cmd.Env), timescale.Env+"="+GuestTimeScale)
	}
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if cmd.Log == nil {
		cmd.Log = os.Stderr
	}
	if cmd.Timeout == 0 {
		cmd.Timeout = 30 * time.Minute
	}
	if cmd.CPUs == 0 {
		cmd.CPUs = 2
	}
	if cmd.MemoryMiB == 0 {
		cmd.MemoryMiB = 4096
	}
	return cmd
}

// run is one VM's directory on the host: the script the guest runs, the
// modules it loads, the sockets its ports connect to and its console log.
type run struct {
	cmd Command
	k   *Kernel
	dir string
}

func newRun(cmd Command, k *Kernel) (*run, error) {
	modules, err := filepath.EvalSymlinks(k.Modules)
	if err != nil {
		return nil, err
	}
	k.Modules = modules // the guest resolves links against its own root
	dir, err := os.MkdirTemp("", "svcvm-")
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return nil, err
	}
	r := &run{cmd: cmd, k: k, dir: dir}
	if err := r.checkPaths(); err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	files := map[string]string{
		"script":  script(cmd),
		"modules": strings.Join(append(DefaultModules, cmd.Modules...), "\n") + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, errors.Join(err, os.RemoveAll(dir))
		}
	}
	return r, nil
}

// checkPaths refuses paths the kernel command line cannot carry.
func (r *run) checkPaths() error {
	for _, p := range []string{r.dir, r.k.Modules} {
		if strings.ContainsAny(p, " \t\n\"'") {
			return fmt.Errorf("vm: path %q has a space or quote; set TMPDIR or SVCPROXY_VM_CACHE elsewhere", p)
		}
	}
	return nil
}

// finish removes the run's directory, or keeps it (and says so) when the
// run failed, for its console log.
func (r *run) finish(ok bool) {
	if ok {
		os.RemoveAll(r.dir)
		return
	}
	fmt.Fprintf(r.cmd.Log, "vm: console log kept in %s\n", r.console())
}

func (r *run) console() string { return filepath.Join(r.dir, "console.log") }

// ports are the virtio console ports the guest writes to.
var ports = []string{"stdout", "stderr", "status"}

// boot runs qemu until the guest powers off and collects the command's
// output and status.
func (r *run) boot(ctx context.Context, qemu string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cmd.Timeout)
	defer cancel()
	listeners := map[string]*net.UnixListener{}
	for _, p := range ports {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(r.dir, p+".sock"), Net: "unix"})
		if err != nil {
			return Result{}, err
		}
		defer l.Close()
		listeners[p] = l
	}
	var qemuOut bytes.Buffer
	q := exec.CommandContext(ctx, qemu, r.qemuArgs()...)
	q.Stdout, q.Stderr = &qemuOut, &qemuOut
	// If this process dies, the VM dies with it.
	q.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := q.Start(); err != nil {
		return Result{}, fmt.Errorf("vm: start qemu: %w", err)
	}
	st := &status{start: start}
	var wg sync.WaitGroup
	wg.Go(func() { serve(listeners["stdout"], r.cmd.Stdout) })
	wg.Go(func() { serve(listeners["stderr"], r.cmd.Stderr) })
	wg.Go(func() { serve(listeners["status"], st) })
	waitErr := q.Wait()
	res := Result{Elapsed: time.Since(start)}
	for _, l := range listeners {
		l.Close() // unblocks an Accept if qemu never connected
	}
	wg.Wait()
	res.Boot, res.ExitCode = st.result()
	if res.ExitCode < 0 {
		return res, r.failure(ctx, st, waitErr, qemuOut.String())
	}
	return res, nil
}

// qemuArgs boots the kernel with our initramfs, the host's root over 9p,
// the console in a file and three virtio console ports for the command.
func (r *run) qemuArgs() []string {
	args := []string{
		// qemu's default CPU model: under TCG "max" boots twice as slowly.
		"-accel", "tcg",
		"-smp", strconv.Itoa(r.cmd.CPUs), "-m", strconv.Itoa(r.cmd.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:" + r.console(),
		"-kernel", r.k.Image, "-initrd", r.k.Initramfs,
		"-append", strings.Join([]string{
			"console=ttyS0", "quiet", "panic=-1", "rdinit=/init", "mitigations=off",
			"svcvm.run=" + r.dir, "svcvm.modules=" + r.k.Modules,
		}, " "),
		"-virtfs", "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-serial-pci",
	}
	for _, p := range ports {
		args = append(args,
			"-chardev", fmt.Sprintf("socket,id=%s,path=%s", p, filepath.Join(r.dir, p+".sock")),
			"-device", fmt.Sprintf("virtserialport,chardev=%s,name=%s", p, p))
	}
	return args
}

// serve copies what the guest writes to one port into w.
func serve(l *net.UnixListener, w io.Writer) {
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	io.Copy(w, c)
}

// status parses the status port: "start" when the command starts, then
// "exit N".
type status struct {
	mu      sync.Mutex
	start   time.Time
	partial []byte
	boot    time.Duration
	started bool
	code    int
	exited  bool
}

func (s *status) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		line, rest, ok := bytes.Cut(s.partial, []byte("\n"))
		if !ok {
			return len(p), nil
		}
		s.partial = rest
		switch f := strings.Fields(string(line)); {
		case len(f) == 1 && f[0] == "start":
			s.started, s.boot = true, time.Since(s.start)
		case len(f) == 2 && f[0] == "exit":
			s.code, _ = strconv.Atoi(f[1])
			s.exited = true
		}
	}
}

// result returns the boot time and the exit code, -1 if the command did
// not finish.
func (s *status) result() (time.Duration, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.exited {
		return s.boot, -1
	}
	return s.boot, s.code
}

// failure explains a VM that ended before its command did.
func (r *run) failure(ctx context.Context, st *status, waitErr error, qemuOut string) error {
	st.mu.Lock()
	started := st.started
	st.mu.Unlock()
	what := "the VM did not reach the command"
	if started {
		what = "the VM ended before the command did"
	}
	if ctx.Err() != nil {
		what += fmt.Sprintf(" (killed after the %v timeout)", r.cmd.Timeout)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "vm: %s", what)
	if waitErr != nil {
		fmt.Fprintf(&b, ": qemu: %v", waitErr)
	}
	if s := strings.TrimSpace(qemuOut); s != "" {
		fmt.Fprintf(&b, "\nqemu said: %s", s)
	}
	fmt.Fprintf(&b, "\nconsole (%s), last lines:\n%s", r.console(), tail(r.console(), 30))
	return errors.New(b.String())
}

// tail returns the last n lines of a file.
func tail(name string, n int) string {
	data, err := os.ReadFile(name)
	if err != nil {
		return err.Error()
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	lines = lines[max(0, len(lines)-n):]
	return strings.Join(lines, "\n")
}

// script is the shell script the guest runs: go to the directory, then
// exec the command with exactly the environment given.
func script(cmd Command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cd %s || exit 127\nexec env -i --", quote(cmd.Dir))
	for _, kv := range cmd.Env {
		if strings.Contains(kv, "=") {
			fmt.Fprintf(&b, " %s", quote(kv))
		}
	}
	for _, a := range cmd.Args {
		fmt.Fprintf(&b, " %s", quote(a))
	}
	b.WriteString("\n")
	return b.String()
}

// quote makes s one shell word.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// CacheDir is where the kernel is kept: $SVCPROXY_VM_CACHE, or vm/ in
// svcproxy's cache directory (package cachedir: the checkout's .cache).
func CacheDir() (string, error) {
	if d := os.Getenv("SVCPROXY_VM_CACHE"); d != "" {
		return d, nil
	}
	dir, err := cachedir.Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "vm"), nil
}
