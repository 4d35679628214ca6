package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/svcproxy/svcproxy/internal/cachedir"
)

// testOptions build an image of a stand-in binary from the pinned
// packages (downloaded once into the checkout's .cache/image/debs).
func testOptions(t *testing.T) Options {
	t.Helper()
	for _, tool := range []string{"apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("building the image needs Debian's %s: %v", tool, err)
		}
	}
	cache, err := cachedir.Dir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "svcproxy")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho stand-in\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Options{Binary: bin, Version: "v1.2.3+dirty", Commit: "0123abc", Repository: "example.com/svcproxy",
		Epoch: time.Unix(1764000000, 0), DebCache: filepath.Join(cache, "image", "debs"), AllowNewer: true}
}

// TestBuiltArchive builds an image twice from the same inputs, then reads
// the archive as each kind of consumer does.
func TestBuiltArchive(t *testing.T) {
	opts := testOptions(t)
	dir := t.TempDir()
	archive := filepath.Join(dir, "a.tar")
	res, err := Build(context.Background(), opts, archive)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s, %d bytes; drift from debian.lock: %v", res.Ref, res.Digest, res.Size, res.Drift)
	t.Run("reproducible", func(t *testing.T) { checkReproducible(t, opts, archive, res) })
	t.Run("docker save and OCI layout", func(t *testing.T) { checkReadable(t, archive, res) })
	t.Run("crane push", func(t *testing.T) { checkCranePush(t, archive, res) })
}

// checkReproducible: a second build from the same inputs is the same
// archive, byte for byte.
func checkReproducible(t *testing.T, opts Options, archive string, res *Result) {
	again := filepath.Join(t.TempDir(), "b.tar")
	res2, err := Build(context.Background(), opts, again)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(archive)
	b, _ := os.ReadFile(again)
	if res.Digest != res2.Digest || !bytes.Equal(a, b) {
		t.Errorf("two builds differ: %s (%d bytes), %s (%d bytes)", res.Digest, len(a), res2.Digest, len(b))
	}
}

// checkReadable reads the archive the two ways consumers do: as docker
// save's manifest.json (crane push, docker load) and as an OCI image layout
// (ctr images import, kind load), and checks the name, digest, labels and
// entrypoint each sees.
func checkReadable(t *testing.T, archive string, res *Result) {
	if res.Ref != "example.com/svcproxy:v1.2.3-dirty" || len(res.Layers) != 2 {
		t.Errorf("ref %s, %d layers", res.Ref, len(res.Layers))
	}
	saved, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := saved.Digest(); err != nil || d != res.Digest {
		t.Errorf("manifest.json's image has digest %s (%v), want %s", d, err, res.Digest)
	}
	cfg, err := saved.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"org.opencontainers.image.version": "v1.2.3+dirty", "org.opencontainers.image.revision": "0123abc",
		"org.opencontainers.image.source": Source, "io.svcproxy.kube-proxy-compatible": "v1.36",
		"org.opencontainers.image.created": "2025-11-24T16:00:00Z"}
	for k, v := range want {
		if cfg.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cfg.Config.Labels[k], v)
		}
	}
	if strings.Join(cfg.Config.Entrypoint, " ") != Entrypoint || cfg.Architecture != Arch || cfg.OS != "linux" {
		t.Errorf("config %+v", cfg)
	}

	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xf", archive, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	index, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != res.Digest ||
		im.Manifests[0].Annotations["io.containerd.image.name"] != res.Ref || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3-dirty" {
		t.Fatalf("index.json: %+v", im.Manifests)
	}
	img, err := index.Image(res.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if layers, err := img.Layers(); err != nil || len(layers) != 2 {
		t.Errorf("the layout's image has %d layers (%v)", len(layers), err)
	}
}

// checkCranePush pushes the archive as `crane push` does (load the file,
// push it) to a registry on loopback, and reads back the same digest.
func checkCranePush(t *testing.T, archive string, res *Result) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/svcproxy:v1"
	img, err := crane.Load(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := crane.Push(img, ref); err != nil {
		t.Fatal(err)
	}
	if got, err := crane.Digest(ref); err != nil || got != res.Digest.String() {
		t.Errorf("the registry has %s as %s (%v), want %s", ref, got, err, res.Digest)
	}
}

// TestRootHoldsWhatTheDataplanesRun checks the Debian layer's contents:
// every command (ipset and ipvsadm too), resolving to an ELF executable
// whose libraries are there; the iptables extensions the rules use; no documentation but copyright
// files; a status entry per package.
func TestRootHoldsWhatTheDataplanesRun(t *testing.T) {
	opts := testOptions(t)
	opts.Lock = LockFile
	root, pins, _, err := debianRoot(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	must := append(append([]string{}, Commands...), DataFiles...)
	for link := range Alternatives {
		must = append(must, link)
	}
	for _, ext := range []string{"libxt_statistic.so", "libxt_comment.so", "libxt_conntrack.so", "libxt_mark.so", "libxt_MASQUERADE.so",
		"libxt_DNAT.so", "libipt_REJECT.so", "libip6t_REJECT.so", "libxt_addrtype.so", "libxt_recent.so", "libxt_tcp.so", "libxt_udp.so", "libxt_sctp.so",
		"libxt_set.so", "libxt_MARK.so"} { // the last two: IPVS mode's glue (ipset matches, marking for masquerade)
		must = append(must, xtablesDir+"/"+ext)
	}
	must = append(must, "/lib64/ld-linux-x86-64.so.2", "/usr/share/doc/libc6/copyright", "/var/lib/dpkg/status.d/nftables")
	for _, p := range must {
		real, _, err := root.resolve(p)
		if err != nil || root[real] == nil || root[real].hdr.Typeflag != tar.TypeReg {
			t.Errorf("%s: not a file of the image (%s, %v)", p, real, err)
		}
	}
	var size int64
	for p, e := range root {
		size += int64(len(e.data))
		switch {
		case strings.HasPrefix(p, "/usr/share/man/"), strings.HasPrefix(p, "/usr/share/doc/") && !strings.HasSuffix(p, "/copyright"),
			strings.Contains(p, "/xtables/libebt_"), strings.Contains(p, "/xtables/libarpt_"):
			t.Errorf("%s is in the image", p)
		}
	}
	if size > 24<<20 {
		t.Errorf("the Debian layer holds %d MiB of files; it should be only the commands and what they load", size>>20)
	}
	for _, p := range pins {
		if root["/var/lib/dpkg/status.d/"+p.Name] == nil {
			t.Errorf("no status entry for %s", p.Name)
		}
	}
	t.Logf("%d entries, %.1f MiB, from %d packages", len(root), float64(size)/(1<<20), len(pins))
}
