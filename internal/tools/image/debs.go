package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Arch is the Debian architecture of the image's packages (and GOARCH of
// its svcproxy).
const Arch = "amd64"

// Roots are the Debian packages whose commands the dataplanes run; the
// image's packages are their dependencies (Depends and Pre-Depends,
// recursively), and of those only the files the commands load go in.
// ipset and ipvsadm are for IPVS mode: the dataplane itself talks netlink,
// but an operator reads a node's sets and virtual servers with them, as on
// a kube-proxy node.
var Roots = []string{"nftables", "iptables", "conntrack", "ipset", "ipvsadm"}

// Extras are taken without their dependencies: base-files for
// /etc/os-release (so that scanners know the distribution), netbase for
// /etc/protocols and /etc/services.
var Extras = []string{"base-files", "netbase"}

// Pin is one Debian package at one version, and its .deb's SHA-256.
type Pin struct {
	Name, Version, SHA256 string
}

// debGlob matches the file name apt-get download gives the package: its
// architecture is Arch, or "all".
func (p Pin) debGlob() string {
	return p.Name + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_*.deb"
}

// LockFile is debian.lock: the pins the image is built from.
//
//go:embed debian.lock
var LockFile string

const lockHeader = `# The Debian packages of svcproxy's image (` + Arch + `), one per line: name,
# version, SHA-256 of the .deb. Rewritten by make image-lock from this
# machine's apt (the dependencies of the packages in image.Roots, and
# image.Extras); commit it with the change that needed it.
`

// ParseLock reads a lock file.
func ParseLock(text string) ([]Pin, error) {
	var pins []Pin
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || len(f[2]) != 64 {
			return nil, fmt.Errorf("debian.lock line %d: want NAME VERSION SHA256, got %q", n, line)
		}
		pins = append(pins, Pin{f[0], f[1], f[2]})
	}
	return pins, sc.Err()
}

// FormatLock writes pins as a lock file, sorted by name.
func FormatLock(pins []Pin) string {
	pins = slices.Clone(pins)
	slices.SortFunc(pins, func(a, b Pin) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	b.WriteString(lockHeader)
	for _, p := range pins {
		fmt.Fprintf(&b, "%s %s %s\n", p.Name, p.Version, p.SHA256)
	}
	return b.String()
}

// debs fetches .deb files into a cache directory with apt-get download.
type debs struct {
	cache string
	// allowNewer takes apt's candidate when a pinned version is no
	// longer offered (a Debian point release replaced it); drift records
	// each such package.
	allowNewer bool
	drift      []string
}

// fetch returns the path of pin's .deb, downloading it into the cache if
// it is not there, and checks its SHA-256. The pin is updated if drift
// is allowed and happened.
func (d *debs) fetch(ctx context.Context, pin *Pin) (string, error) {
	path, found := d.cached(*pin)
	if !found {
		if err := d.download(ctx, pin.Name+"="+pin.Version); err != nil {
			if !d.allowNewer {
				return "", fmt.Errorf("%w\n%s %s may be gone from apt since debian.lock was written (see `apt-cache policy %s`): run `make image-lock` and commit debian.lock",
					err, pin.Name, pin.Version, pin.Name)
			}
			return d.fetchCandidate(ctx, pin)
		}
		if path, found = d.cached(*pin); !found {
			return "", fmt.Errorf("apt-get download %s=%s wrote no %s in %s", pin.Name, pin.Version, pin.debGlob(), d.cache)
		}
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return "", err
	}
	if pin.SHA256 != "" && sum != pin.SHA256 {
		return "", fmt.Errorf("%s: SHA-256 %s, debian.lock says %s", path, sum, pin.SHA256)
	}
	pin.SHA256 = sum
	return path, nil
}

// cached returns the path of pin's .deb in the cache, if it is there.
func (d *debs) cached(pin Pin) (string, bool) {
	matches, _ := filepath.Glob(filepath.Join(d.cache, pin.debGlob()))
	if len(matches) != 1 {
		return "", false
	}
	return matches[0], true
}

// fetchCandidate replaces pin with apt's candidate version and fetches it.
func (d *debs) fetchCandidate(ctx context.Context, pin *Pin) (string, error) {
	v, err := candidate(ctx, pin.Name)
	if err != nil {
		return "", err
	}
	d.drift = append(d.drift, fmt.Sprintf("%s %s instead of %s", pin.Name, v, pin.Version))
	*pin = Pin{Name: pin.Name, Version: v}
	return d.fetch(ctx, pin)
}

// download runs apt-get download for the packages ("name=version") into
// the cache. It writes only there; apt's own lists are read, not updated.
func (d *debs) download(ctx context.Context, pkgs ...string) error {
	if err := os.MkdirAll(d.cache, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q", "-o", "APT::Sandbox::User=root"}, pkgs...)...)
	cmd.Dir = d.cache
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w\n%s(if apt knows no packages yet, run apt-get update first)",
			strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// candidate is the version apt would install of pkg.
func candidate(ctx context.Context, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "policy", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache policy %s: %w", pkg, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate: "); ok && v != "(none)" {
			return v, nil
		}
	}
	return "", fmt.Errorf("apt has no candidate for %s (run apt-get update?)", pkg)
}

// Resolve pins the current apt candidates of Roots' dependency closure
// and of Extras, downloading each into cache to record its SHA-256: what
// `make image-lock` writes.
func Resolve(ctx context.Context, cache string) ([]Pin, error) {
	args := append([]string{"depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances"}, Roots...)
	out, err := exec.CommandContext(ctx, "apt-cache", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache depends: %w", err)
	}
	names := slices.Clone(Extras)
	for _, line := range strings.Split(string(out), "\n") {
		if line != "" && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "<") && !slices.Contains(names, line) {
			names = append(names, line)
		}
	}
	d := &debs{cache: cache}
	var pins []Pin
	for _, name := range names {
		v, err := candidate(ctx, name)
		if err != nil {
			return nil, err
		}
		pin := Pin{Name: name, Version: v}
		if _, err := d.fetch(ctx, &pin); err != nil {
			return nil, err
		}
		pins = append(pins, pin)
	}
	return pins, nil
}

// dataTar returns a .deb's file system archive (uncompressed tar).
func dataTar(ctx context.Context, deb string) (io.Reader, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, stderr.Bytes())
	}
	return bytes.NewReader(out), nil
}

// control returns a .deb's control paragraph, as dpkg's status file holds it.
func control(ctx context.Context, deb string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "dpkg-deb", "--field", deb).Output()
	if err != nil {
		return nil, fmt.Errorf("dpkg-deb --field %s: %w", deb, err)
	}
	return out, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
