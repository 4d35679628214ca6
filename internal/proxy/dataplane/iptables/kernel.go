package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Kernel holds the iptables tables of both families, through one backend.
// The real one runs iptables-save and iptables-restore; Fake holds them in
// memory.
type Kernel interface {
	// Backend is "nft" (iptables-nft) or "legacy" (iptables-legacy).
	Backend() string
	// Save reads family f's tables, as iptables-save prints them.
	Save(ctx context.Context, f plan.Family) (map[string]*Table, error)
	// Restore applies tx to family f's tables, each table atomically, as
	// iptables-restore --noflush does; on an error nothing of the failing
	// table is applied.
	Restore(ctx context.Context, f plan.Family, tx *Transaction) error
}

// execKernel runs the binaries of one backend with run.
type execKernel struct {
	backend string
	run     Runner
}

func (k execKernel) Backend() string { return k.backend }

func (k execKernel) Save(ctx context.Context, f plan.Family) (map[string]*Table, error) {
	out, err := k.run(ctx, nil, binary(f, k.backend, "-save"))
	if err != nil {
		return nil, err
	}
	return ParseSave(string(out)), nil
}

func (k execKernel) Restore(ctx context.Context, f plan.Family, tx *Transaction) error {
	_, err := k.run(ctx, tx.Bytes(), binary(f, k.backend, "-restore"), "--noflush", "-w", "5")
	return err
}

// execRun runs a binary in this process's network namespace.
func execRun(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func binary(f plan.Family, backend, tool string) string {
	base := "iptables"
	if f == plan.IPv6 {
		base = "ip6tables"
	}
	return base + "-" + backend + tool
}

// detectBackend picks the backend: the one already holding our chains,
// else what `iptables --version` says.
func detectBackend(ctx context.Context) string {
	for _, b := range []string{"nft", "legacy"} {
		out, err := execRun(ctx, nil, binary(plan.IPv4, b, "-save"))
		if err == nil && bytes.Contains(out, []byte(":"+chainServices+" ")) {
			return b
		}
	}
	if out, err := execRun(ctx, nil, "iptables", "--version"); err == nil && bytes.Contains(out, []byte("legacy")) {
		return "legacy"
	}
	return "nft"
}

// missingBinary reports an error from a backend whose binaries are not
// installed: nothing of ours can be there.
func missingBinary(err error) bool { return errors.Is(err, exec.ErrNotFound) }

// DetectBackend picks the backend a node uses, as the dataplane does
// (the IPVS dataplane writes its glue with it).
func DetectBackend(ctx context.Context) string { return detectBackend(ctx) }

// MissingBinary reports an error from a backend whose binaries are not
// installed.
func MissingBinary(err error) bool { return missingBinary(err) }
