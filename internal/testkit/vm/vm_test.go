package vm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRun boots a VM and checks what passes through: the working
// directory, the environment, standard output and error apart, the exit
// status, and the kernel's IPVS.
func TestRun(t *testing.T) {
	var stdout, stderr bytes.Buffer
	dir := t.TempDir()
	res, err := Run(context.Background(), Command{
		Args:   []string{"sh", "-c", `pwd; echo "$GREETING"; echo oops >&2; id -u; test -e /proc/net/ip_vs && echo ipvs; exit 7`},
		Dir:    dir,
		Env:    append(os.Environ(), "GREETING=it's a \"VM\""),
		Stdout: &stdout, Stderr: &stderr,
		Timeout: 3 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %v, total %v", res.Boot, res.Elapsed)
	want := fmt.Sprintf("%s\nit's a \"VM\"\n0\nipvs\n", dir)
	if stdout.String() != want || stderr.String() != "oops\n" || res.ExitCode != 7 {
		t.Errorf("got stdout %q, stderr %q, exit %d; want %q, %q, 7", stdout.String(), stderr.String(), res.ExitCode, want, "oops\n")
	}
}

// TestRunBootFailure: a VM that cannot get to the command is an error
// that says why, from its console.
func TestRunBootFailure(t *testing.T) {
	var log bytes.Buffer
	_, err := Run(context.Background(), Command{
		Args: []string{"true"}, Modules: []string{"no_such_module"},
		Stdout: io.Discard, Stderr: io.Discard, Log: &log, Timeout: 3 * time.Minute,
	})
	if err == nil || !strings.Contains(err.Error(), "cannot load the modules") {
		t.Fatalf("got %v, want the console's reason", err)
	}
	t.Log(err)
	removeKept(t, log.String())
}

// TestRunTimeout: the timeout kills the VM, and says so.
func TestRunTimeout(t *testing.T) {
	var log bytes.Buffer
	_, err := Run(context.Background(), Command{
		Args: []string{"sleep", "600"}, Stdout: io.Discard, Stderr: io.Discard, Log: &log,
		Timeout: 2 * time.Second,
	})
	if err == nil || !strings.Contains(err.Error(), "killed after the 2s timeout") {
		t.Fatalf("got %v, want a timeout", err)
	}
	removeKept(t, log.String())
}

// removeKept removes the run directory whose console log Run kept.
func removeKept(t *testing.T, log string) {
	kept, ok := strings.CutPrefix(strings.TrimSpace(log), "vm: console log kept in ")
	if _, err := os.Stat(kept); !ok || err != nil {
		t.Errorf("console log not kept: %q: %v", log, err)
		return
	}
	os.RemoveAll(filepath.Dir(kept))
}

// TestScript runs the script the guest would run, here: every argument
// and variable arrives as one word, whatever it holds.
func TestScript(t *testing.T) {
	args := []string{"printf", `[%s]\n`, "a b", `it's`, `"$HOME"`, "x\ny", ""}
	dir := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "ODD='$x\""}
	s := script(Command{Args: args, Dir: dir, Env: env})
	out, err := exec.Command("sh", "-c", s+"\n").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s\nscript:\n%s", err, out, s)
	}
	want := "[a b]\n[it's]\n[\"$HOME\"]\n[x\ny]\n[]\n"
	if string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
	got, err := exec.Command("sh", "-c", script(Command{Args: []string{"env"}, Dir: dir, Env: env})).Output()
	if err != nil || string(got) != strings.Join(env, "\n")+"\n" {
		t.Errorf("env: %v: got %q, want %q", err, got, env)
	}
}

// TestCPIO checks our archive against busybox's cpio reader.
func TestCPIO(t *testing.T) {
	var a cpioArchive
	a.dirs("lib/modules/x")
	a.file("lib/modules/x/a.ko", 0o644, []byte("hello"))
	a.symlink("sbin/modprobe", "../bin/busybox")
	a.file("init", 0o755, []byte("#!/bin/sh\n"))
	cmd := exec.Command(busyboxPath, "cpio", "-t")
	cmd.Stdin = bytes.NewReader(a.bytes())
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(out))
	want := []string{"lib", "lib/modules", "lib/modules/x", "lib/modules/x/a.ko", "sbin/modprobe", "init"}
	if !slices.Equal(got, want) {
		t.Errorf("busybox cpio -t: got %q, want %q", got, want)
	}
}

func TestVMTimeout(t *testing.T) {
	for args, want := range map[string]time.Duration{
		"-test.v=true -test.timeout=20m0s": 22 * time.Minute,
		"-test.timeout=0s":                 30 * time.Minute,
		"-test.run=X":                      30 * time.Minute,
	} {
		if got := vmTimeout(strings.Fields(args)); got != want {
			t.Errorf("vmTimeout(%s) = %v, want %v", args, got, want)
		}
	}
}

// TestTestArgs: the flags choosing tests go, whichever way they are
// written, and one -test.run names exactly the test.
func TestTestArgs(t *testing.T) {
	got := testArgs([]string{"-test.v", "-test.run", "TestA/b", "-test.timeout", "20m", "--test.skip=X", "-test.count=1", "-test.run=Y"}, "TestWalk/ipvs (1)")
	want := []string{"-test.v", "-test.timeout", "20m", "-test.count=1", `-test.run=^TestWalk$/^ipvs \(1\)$`}
	if !slices.Equal(got, want) {
		t.Errorf("testArgs = %q, want %q", got, want)
	}
}
