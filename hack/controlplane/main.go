// Command controlplane builds the pinned control-plane binaries (see
// package pinned) into this checkout's .cache/controlplane/<pins>/, those
// named as arguments or etcd and kube-apiserver, and prints that directory.
// hack/controlplane.sh runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/svcproxy/svcproxy/internal/cachedir"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane/pinned"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tools := os.Args[1:]
	if len(tools) == 0 {
		tools = []string{"etcd", "kube-apiserver"}
	}
	dir, err := controlplaneDir()
	if err == nil {
		err = pinned.Ensure(ctx, pinned.Options{Dir: dir, Progress: os.Stderr}, tools...)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(dir)
}

// controlplaneDir is where controlplane.BinariesDir looks: the checkout's
// .cache/controlplane/<pins>.
func controlplaneDir() (string, error) {
	cache, err := cachedir.Dir()
	return filepath.Join(cache, "controlplane", pinned.Key()), err
}
