// Command image builds svcproxy's container image as an OCI archive
// without a container daemon (see package image), and prints its
// reference, digest, size and contents: `make image`. With --update-lock
// it rewrites the Debian pins instead: `make image-lock`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/svcproxy/svcproxy/internal/cachedir"
	"github.com/svcproxy/svcproxy/internal/tools/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	out := fs.String("out", "bin/svcproxy-image.tar", "the OCI archive to write")
	repo := fs.String("repository", image.DefaultRepository, "the image's name; its tag is the version")
	ver := fs.String("version", "", "the version (labels, tag, and `svcproxy version`)")
	commit := fs.String("commit", "", "the commit (label, and `svcproxy version`)")
	epoch := fs.String("epoch", os.Getenv("SOURCE_DATE_EPOCH"), "the files' and the image's time, in seconds since 1970 (SOURCE_DATE_EPOCH)")
	updateLock := fs.String("update-lock", "", "instead of building, write the pins of apt's current packages to this lock file")
	allowNewer := fs.Bool("allow-newer", false, "take apt's version of a package whose pin apt no longer offers, and warn (for tests)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cache, err := cachedir.Dir()
	if err != nil {
		return err
	}
	debs := filepath.Join(cache, "image", "debs")
	if *updateLock != "" {
		pins, err := image.Resolve(ctx, debs)
		if err != nil {
			return err
		}
		return os.WriteFile(*updateLock, []byte(image.FormatLock(pins)), 0o644)
	}
	if *ver == "" || *commit == "" || *epoch == "" {
		return fmt.Errorf("--version, --commit and --epoch (or SOURCE_DATE_EPOCH) are required")
	}
	secs, err := strconv.ParseInt(*epoch, 10, 64)
	if err != nil {
		return fmt.Errorf("--epoch %q: %w", *epoch, err)
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	binary := filepath.Join(filepath.Dir(*out), "svcproxy-linux-"+image.Arch)
	if err := image.BuildBinary(ctx, binary, *ver, *commit, os.Stderr); err != nil {
		return err
	}
	res, err := image.Build(ctx, image.Options{Binary: binary, Version: *ver, Commit: *commit, Repository: *repo,
		Epoch: time.Unix(secs, 0), DebCache: debs, AllowNewer: *allowNewer}, *out)
	if err != nil {
		return err
	}
	report(stdout, *out, res)
	return nil
}

// report prints what make image shows.
func report(w io.Writer, out string, res *image.Result) {
	fmt.Fprintf(w, "image    %s\ndigest   %s\narchive  %s, %.1f MiB (load with: docker load -i, ctr images import, kind load image-archive; push with: crane push %s REF)\n",
		res.Ref, res.Digest, out, float64(res.Size)/(1<<20), out)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "layer\tcompressed\tfiles\tholds")
	for i, l := range res.Layers {
		fmt.Fprintf(tw, "%d %s\t%.1f MiB\t%d\t%s\n", i+1, l.Digest.Hex[:12], float64(l.Size)/(1<<20), l.Files, l.What)
	}
	tw.Flush()
	fmt.Fprintf(w, "commands %s, %s, and %s -> the nft back end\n", strings.Join(image.Commands, " "), "iptables extensions (libxt_, libipt_, libip6t_)", "iptables, ip6tables and their -save and -restore")
	var pkgs []string
	for _, p := range res.Packages {
		pkgs = append(pkgs, p.Name+" "+p.Version)
	}
	fmt.Fprintf(w, "debian   %d packages: %s\n", len(pkgs), strings.Join(pkgs, ", "))
	for _, d := range res.Drift {
		fmt.Fprintf(w, "warning: %s (debian.lock is out of date)\n", d)
	}
}
