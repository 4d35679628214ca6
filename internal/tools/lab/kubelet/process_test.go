package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestExecRunsARecordedProcess: a container's executable runs with the
// container's environment, is recorded while it runs, is stopped when its
// context ends, and an executable that exits on its own is reported with
// its log.
func TestExecRunsARecordedProcess(t *testing.T) {
	k, _ := newKubelet(t)
	k.lab.Dir = t.TempDir()
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "dns", Namespace: "kube-system", UID: "uid-1"}}
	p := newPod(k, obj)
	p.netns = "" // this namespace: no kernel needed
	exec := p.execIn(corev1.Container{Name: "c"}, map[string]string{"GREETING": "hello"})

	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- exec(ctx, "/bin/sh", []string{"-c", `echo "$GREETING"; exec sleep 60`}, func() { close(started) })
	}()
	<-started
	procs, err := k.lab.Processes()
	if err != nil || len(procs) != 1 || !procs[0].Running || procs[0].Name != "-c" { // "<netns without the lab's prefix>-<container>"
		t.Fatalf("recorded processes %+v, %v", procs, err)
	}
	logPath := filepath.Join(k.lab.Dir, "logs", procs[0].Name+".log")
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(readFile(logPath), "hello") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // until the shell has run echo
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stopped process: %v, want nil", err)
		}
	case <-time.After(stopTimeout):
		t.Fatal("the process was not stopped")
	}
	if procs, _ := k.lab.Processes(); len(procs) != 0 {
		t.Errorf("still recorded after it stopped: %+v", procs)
	}
	if log := readFile(logPath); strings.TrimSpace(log) != "hello" {
		t.Errorf("log %q, want the container's GREETING", log)
	}

	err = exec(context.Background(), "/bin/sh", []string{"-c", "exit 3"}, func() {})
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), procs[0].Name+".log") {
		t.Errorf("exited process: %v, want exit status 3 and the log's path", err)
	}
}

func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}
