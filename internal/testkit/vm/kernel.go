package vm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/internal/filelock"
)

// Kernel is a Debian kernel with its modules and our initramfs, unpacked
// in the cache.
type Kernel struct {
	// Release is the kernel's `uname -r`, e.g. "6.1.0-57-amd64".
	Release string
	// Image is the bzImage qemu boots.
	Image string
	// Modules is the lib/modules directory holding <Release>, with
	// modules.dep made by depmod.
	Modules string
	// Initramfs is our cpio archive (initramfs.go).
	Initramfs string
}

// metaPackage names Debian's current amd64 kernel; it depends on the
// versioned package (linux-image-6.1.0-N-amd64) that holds the files.
const metaPackage = "linux-image-amd64"

//go:embed init.sh
var initScript []byte

// bootModules reach the host's file system and the console ports; they
// go into the initramfs with everything they depend on.
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console"}

// Prepare returns the kernel in the cache directory, downloading and
// unpacking it first if the cache has none (apt-get download, dpkg-deb -x,
// depmod -b). Concurrent callers, in this process or others, wait for one
// another. Progress goes to log.
func Prepare(ctx context.Context, cacheDir string, log io.Writer) (*Kernel, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := filelock.Lock(filepath.Join(cacheDir, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	dir, err := cachedKernel(cacheDir)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		if dir, err = download(ctx, cacheDir, log); err != nil {
			return nil, err
		}
	}
	return kernelIn(dir)
}

// cachedKernel returns the newest unpacked kernel directory, or "".
func cachedKernel(cacheDir string) (string, error) {
	dirs, err := filepath.Glob(filepath.Join(cacheDir, "linux-image-*", "complete"))
	if err != nil || len(dirs) == 0 {
		return "", err
	}
	slices.Sort(dirs)
	return filepath.Dir(dirs[len(dirs)-1]), nil
}

// kernelIn describes the kernel unpacked in dir and builds its initramfs
// if this version of init.sh has none yet.
func kernelIn(dir string) (*Kernel, error) {
	images, err := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if err != nil || len(images) != 1 {
		return nil, fmt.Errorf("vm: want one boot/vmlinuz-* in %s, found %v (remove the directory to download it again)", dir, images)
	}
	k := &Kernel{
		Release: strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-"),
		Image:   images[0],
		Modules: filepath.Join(dir, "lib", "modules"),
	}
	sum := sha256.Sum256(append(slices.Clone(initScript), strings.Join(bootModules, " ")...))
	k.Initramfs = filepath.Join(dir, fmt.Sprintf("initramfs-%x.cpio", sum[:6]))
	if _, err := os.Stat(k.Initramfs); err == nil {
		return k, nil
	}
	if err := writeInitramfs(k); err != nil {
		return nil, fmt.Errorf("vm: initramfs: %w", err)
	}
	return k, nil
}

// download fetches the current kernel package into cacheDir and unpacks
// it; it returns the kernel's directory.
func download(ctx context.Context, cacheDir string, log io.Writer) (string, error) {
	pkg, err := kernelPackage(ctx, log)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(log, "vm: downloading %s into %s\n", pkg, cacheDir)
	tmp, err := os.MkdirTemp(cacheDir, "download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if _, err := command(ctx, tmp, "apt-get", "download", pkg); err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("vm: apt-get download %s left %v", pkg, debs)
	}
	root := filepath.Join(tmp, "root")
	if _, err := command(ctx, tmp, "dpkg-deb", "-x", debs[0], root); err != nil {
		return "", err
	}
	releases, _ := filepath.Glob(filepath.Join(root, "lib", "modules", "*"))
	if len(releases) != 1 {
		return "", fmt.Errorf("vm: want one lib/modules/* in %s, found %v", debs[0], releases)
	}
	if _, err := command(ctx, tmp, "depmod", "-b", root, filepath.Base(releases[0])); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, "complete"), nil, 0o644); err != nil {
		return "", err
	}
	dir := filepath.Join(cacheDir, pkg)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.Rename(root, dir)
}

var kernelDep = regexp.MustCompile(`Depends: (linux-image-[0-9][^ \n]*-amd64)\n`)

// kernelPackage asks apt which versioned package linux-image-amd64 pulls
// in today, updating apt's lists once if it knows none.
func kernelPackage(ctx context.Context, log io.Writer) (string, error) {
	out, err := command(ctx, "", "apt-cache", "depends", metaPackage)
	if err != nil || !kernelDep.Match(out) {
		fmt.Fprintf(log, "vm: apt knows no %s; running apt-get update\n", metaPackage)
		if _, err := command(ctx, "", "apt-get", "update", "-qq"); err != nil {
			return "", err
		}
		if out, err = command(ctx, "", "apt-cache", "depends", metaPackage); err != nil {
			return "", err
		}
	}
	m := kernelDep.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("vm: apt-cache depends %s names no linux-image-*-amd64:\n%s", metaPackage, out)
	}
	return string(m[1]), nil
}

// command runs name in dir and returns its standard output; the error
// holds its standard error.
func command(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("vm: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// moduleDeps reads modules.dep and returns the files (relative to the
// release directory) of the named modules and of everything they need,
// each once, dependencies first.
func moduleDeps(release string, names []string) ([]string, error) {
	f, err := os.Open(filepath.Join(release, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{} // module name -> file, then its dependencies' files
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		file, rest, ok := strings.Cut(sc.Text(), ":")
		if ok {
			deps[moduleName(file)] = append([]string{file}, strings.Fields(rest)...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var files []string
	for _, name := range names {
		d, ok := deps[strings.ReplaceAll(name, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("module %s is not in %s/modules.dep", name, release)
		}
		for _, file := range slices.Backward(d) {
			if !slices.Contains(files, file) {
				files = append(files, file)
			}
		}
	}
	return files, nil
}

// moduleName is the name modprobe knows a module file by.
func moduleName(file string) string {
	base := filepath.Base(file)
	base, _, _ = strings.Cut(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

var errNoBusybox = errors.New("vm: /bin/busybox is missing (install busybox-static: hack/deps.sh)")
