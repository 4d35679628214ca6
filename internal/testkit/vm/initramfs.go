package vm

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
)

// busyboxPath is Debian's busybox-static: one static binary that is the
// initramfs's shell, mount, modprobe, chroot and poweroff.
const busyboxPath = "/bin/busybox"

// writeInitramfs writes k.Initramfs: busybox (also at /sbin/modprobe,
// where the kernel looks when it loads a module on demand), init.sh as
// /init, and the boot modules with the release's modules.dep.
func writeInitramfs(k *Kernel) error {
	busybox, err := staticBusybox()
	if err != nil {
		return err
	}
	releaseDir := filepath.Join(k.Modules, k.Release)
	mods, err := moduleDeps(releaseDir, bootModules)
	if err != nil {
		return err
	}
	var a cpioArchive
	for _, dir := range []string{"bin", "sbin", "dev", "proc", "sys", "lib", "lib/modules"} {
		a.dir(dir)
	}
	a.file("bin/busybox", 0o755, busybox)
	a.symlink("bin/sh", "busybox")
	a.symlink("sbin/modprobe", "../bin/busybox")
	a.file("init", 0o755, initScript)
	modRoot := "lib/modules/" + k.Release
	a.dir(modRoot)
	dep, err := os.ReadFile(filepath.Join(releaseDir, "modules.dep"))
	if err != nil {
		return err
	}
	a.file(modRoot+"/modules.dep", 0o644, dep)
	for _, m := range mods {
		data, err := os.ReadFile(filepath.Join(releaseDir, m))
		if err != nil {
			return err
		}
		a.dirs(path.Dir(modRoot + "/" + m))
		a.file(modRoot+"/"+m, 0o644, data)
	}
	return writeAtomic(k.Initramfs, a.bytes())
}

// staticBusybox reads busybox and checks that it needs no shared library.
func staticBusybox() ([]byte, error) {
	data, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, errNoBusybox
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", busyboxPath, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s is dynamically linked; install busybox-static (hack/deps.sh)", busyboxPath)
		}
	}
	return data, nil
}

// writeAtomic writes name whole or not at all. The archive stays
// uncompressed: under TCG the kernel takes a second to gunzip it.
func writeAtomic(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".initramfs-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// cpioArchive builds a cpio archive in the "newc" format, the one the
// kernel unpacks into its initial root file system: per entry a 110-byte
// ASCII header, the name, then the data, each padded to 4 bytes.
type cpioArchive struct {
	buf  bytes.Buffer
	ino  int
	seen map[string]bool
}

const (
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
)

func (a *cpioArchive) dir(name string) { a.entry(name, cpioDir|0o755, nil) }

// dirs adds name and its parents that are not in the archive yet.
func (a *cpioArchive) dirs(name string) {
	if name == "." || name == "/" || a.seen[name] {
		return
	}
	a.dirs(path.Dir(name))
	a.dir(name)
}

func (a *cpioArchive) file(name string, perm int, data []byte) { a.entry(name, cpioFile|perm, data) }

func (a *cpioArchive) symlink(name, target string) {
	a.entry(name, cpioSymlink|0o777, []byte(target))
}

func (a *cpioArchive) entry(name string, mode int, data []byte) {
	if a.seen == nil {
		a.seen = map[string]bool{}
	}
	a.seen[name] = true
	a.ino++
	a.header(name, a.ino, mode, len(data))
	a.buf.Write(data)
	a.pad()
}

func (a *cpioArchive) header(name string, ino, mode, size int) {
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with its NUL), check
	fmt.Fprintf(&a.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	a.buf.WriteString(name)
	a.buf.WriteByte(0)
	a.pad()
}

func (a *cpioArchive) pad() {
	for a.buf.Len()%4 != 0 {
		a.buf.WriteByte(0)
	}
}

// bytes ends the archive with its trailer and returns it.
func (a *cpioArchive) bytes() []byte {
	a.header("TRAILER!!!", 0, 0, 0)
	return a.buf.Bytes()
}
