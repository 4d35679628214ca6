// Package image builds svcproxy's container image without a container
// daemon: a small Debian root file system holding exactly the commands the
// dataplanes run (Commands: nft, iptables with both back ends, conntrack)
// with the libraries and iptables extensions they load, the svcproxy
// binary, and the labels and entrypoint a DaemonSet expects, written as an
// OCI archive (see WriteArchive) that docker load, ctr images import, kind
// load image-archive and crane push accept. `make image` runs it.
//
// The Debian files come from the .deb packages pinned in debian.lock,
// fetched with apt-get download into a cache and read with dpkg-deb, so
// no daemon, chroot or network beyond apt is needed. From them the image
// takes only what Commands, Alternatives, DataFiles and the iptables
// extensions need, following symlinks and ELF dependencies (DT_NEEDED and
// the program interpreter), plus each package's copyright file and its
// control paragraph under /var/lib/dpkg/status.d/ so that scanners know
// what is inside.
//
// The same inputs (the binary, the pinned packages, version, commit and
// epoch) give the same image digest: entries are sorted, owned by root,
// and stamped with one time; so are the config's dates.
package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/svcproxy/svcproxy/internal/version"
)

// DefaultRepository is where svcproxy's images are published.
const DefaultRepository = "ghcr.io/svcproxy/svcproxy"

// Source is the project's source, for the image's labels.
const Source = "https://github.com/svcproxy/svcproxy"

// Entrypoint is where the image holds svcproxy; deploy/daemonset.yaml runs it.
const Entrypoint = "/usr/local/bin/svcproxy"

// KubeProxyCommand is where kube-proxy's image holds kube-proxy, and
// where a kube-proxy DaemonSet's command runs it (kubeadm's runs
// /usr/local/bin/kube-proxy --config=...): the image links it to
// svcproxy, so that swapping only the image of such a DaemonSet works.
const KubeProxyCommand = "/usr/local/bin/kube-proxy"

// Options describe one image.
type Options struct {
	// Binary is the svcproxy executable (see BuildBinary): static, for
	// linux/amd64.
	Binary string
	// Version and Commit label the image, as `svcproxy version` inside it
	// prints them (BuildBinary stamps the same).
	Version, Commit string
	// Repository names the image; the tag is the version. Default
	// DefaultRepository.
	Repository string
	// Epoch is every file's modification time and the image's creation
	// time (SOURCE_DATE_EPOCH).
	Epoch time.Time
	// DebCache holds the downloaded .deb files.
	DebCache string
	// Lock is the pins' text; default LockFile (debian.lock).
	Lock string
	// AllowNewer builds with apt's candidate of a package whose pinned
	// version apt no longer offers, instead of failing; Result.Drift
	// says which. Tests use it, so that a Debian point release does not
	// stop them; `make image` does not.
	AllowNewer bool
}

// Result describes a built image.
type Result struct {
	Ref    string  // repository:tag
	Digest v1.Hash // the manifest's digest: what a registry names the image by
	Size   int64   // bytes of the archive
	Layers []Layer
	// Packages are the Debian packages with files in the image.
	Packages []Pin
	// Drift lists packages built at another version than pinned
	// (Options.AllowNewer).
	Drift []string
}

// Layer describes one layer.
type Layer struct {
	What   string
	Digest v1.Hash
	Size   int64 // compressed
	Files  int   // entries other than directories
}

// Build builds the image and writes it to the OCI archive out.
func Build(ctx context.Context, opts Options, out string) (*Result, error) {
	if opts.Repository == "" {
		opts.Repository = DefaultRepository
	}
	if opts.Lock == "" {
		opts.Lock = LockFile
	}
	base, pins, drift, err := debianRoot(ctx, opts)
	if err != nil {
		return nil, err
	}
	binary, err := os.ReadFile(opts.Binary)
	if err != nil {
		return nil, err
	}
	app := tree{}
	app.addFile(Entrypoint, 0o755, binary)
	app.addSymlink(KubeProxyCommand, "svcproxy")
	img, layers, err := assemble(opts, []layerSource{
		{"Debian " + strings.Join(Roots, ", ") + " and their libraries", base},
		{"svcproxy " + opts.Version, app},
	})
	if err != nil {
		return nil, err
	}
	res := &Result{Ref: opts.Repository + ":" + Tag(opts.Version), Layers: layers, Packages: pins, Drift: drift}
	if res.Digest, err = img.Digest(); err != nil {
		return nil, err
	}
	if res.Size, err = WriteArchive(out, img, res.Ref); err != nil {
		return nil, err
	}
	return res, nil
}

// debianRoot unpacks the pinned packages into a staged tree and selects
// the image's Debian files from it. It returns the pins of the packages
// that have files in the image.
func debianRoot(ctx context.Context, opts Options) (tree, []Pin, []string, error) {
	pins, err := ParseLock(opts.Lock)
	if err != nil {
		return nil, nil, nil, err
	}
	d := &debs{cache: opts.DebCache, allowNewer: opts.AllowNewer}
	staged, controls := tree{}, map[string][]byte{}
	for i := range pins {
		deb, err := d.fetch(ctx, &pins[i])
		if err != nil {
			return nil, nil, nil, err
		}
		data, err := dataTar(ctx, deb)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := staged.addTar(data, pins[i].Name); err != nil {
			return nil, nil, nil, err
		}
		if controls[pins[i].Name], err = control(ctx, deb); err != nil {
			return nil, nil, nil, err
		}
	}
	root, err := selectRoot(staged)
	if err != nil {
		return nil, nil, nil, err
	}
	var used []Pin
	inRoot := root.packages()
	for _, p := range pins {
		if ctl, ok := controls[p.Name]; ok && slices.Contains(inRoot, p.Name) {
			root.addFile("/var/lib/dpkg/status.d/"+p.Name, 0o644, ctl)
			used = append(used, p)
		}
	}
	return root, used, d.drift, nil
}

// selectRoot takes from the staged packages what the image holds.
func selectRoot(staged tree) (tree, error) {
	s := selector{staged: staged, out: tree{}}
	want := append(append([]string{}, Commands...), DataFiles...)
	for p := range staged {
		if isIPExtension(p) {
			want = append(want, p)
		}
	}
	for _, p := range want {
		if err := s.add(p); err != nil {
			return nil, err
		}
	}
	for _, pkg := range s.out.packages() {
		if err := s.add("/usr/share/doc/" + pkg + "/copyright"); err != nil {
			return nil, err
		}
	}
	for link, target := range Alternatives {
		s.out.addSymlink(link, target)
	}
	for link, target := range mergedUsr {
		s.out.addSymlink(link, target)
	}
	s.out.addDir("/tmp", 0o1777)
	s.out.addDir("/run", 0o755)
	return s.out, nil
}

// isIPExtension: an iptables or ip6tables extension, not arptables' or
// ebtables'.
func isIPExtension(p string) bool {
	name, ok := strings.CutPrefix(p, xtablesDir+"/")
	if !ok {
		return false
	}
	for _, prefix := range []string{"libxt_", "libipt_", "libip6t_"} {
		if strings.HasPrefix(name, prefix) && strings.HasSuffix(name, ".so") {
			return true
		}
	}
	return false
}

// Tag is the image tag for a version: the version with the characters a
// tag cannot hold ("+" of "+dirty") replaced by "-".
func Tag(v string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '-'
	}, v)
}

// BuildBinary builds the svcproxy the image ships into out: static
// (CGO_ENABLED=0, since the image's libc is only for the Debian commands),
// linux/amd64, with reproducible paths, version and commit stamped.
func BuildBinary(ctx context.Context, out, ver, commit string, progress io.Writer) error {
	const pkg = "github.com/svcproxy/svcproxy/internal/version"
	ldflags := fmt.Sprintf("-s -w -X %s.Version=%s -X %s.Commit=%s", pkg, ver, pkg, commit)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, "github.com/svcproxy/svcproxy/cmd/svcproxy")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+Arch)
	cmd.Stdout, cmd.Stderr = progress, progress
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building svcproxy for the image: %w", err)
	}
	return nil
}

// labels are the image's labels and manifest annotations: the OCI ones,
// and the kube-proxy release whose flags and configuration it takes.
func labels(opts Options) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "svcproxy",
		"org.opencontainers.image.description": "A Kubernetes Service proxy: a drop-in kube-proxy (" + version.KubeProxy + ")",
		"org.opencontainers.image.version":     opts.Version,
		"org.opencontainers.image.revision":    opts.Commit,
		"org.opencontainers.image.source":      Source,
		"org.opencontainers.image.created":     opts.Epoch.UTC().Format(time.RFC3339),
		"io.svcproxy.kube-proxy-compatible":    version.KubeProxy,
	}
}
