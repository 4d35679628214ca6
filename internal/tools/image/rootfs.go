package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"
)

// Commands are the executables the image holds (with what they load), as
// the dataplanes and an operator call them: nft; iptables and ip6tables
// with both back ends and their -save and -restore; conntrack; ipset and
// ipvsadm, to inspect an IPVS node (svcproxy programs both over netlink;
// the kernel loads ip_vs and the set types on demand, so no modprobe).
var Commands = []string{
	"/usr/sbin/nft",
	"/usr/sbin/conntrack",
	"/usr/sbin/ipset", "/usr/sbin/ipvsadm",
	"/usr/sbin/iptables-nft", "/usr/sbin/iptables-nft-save", "/usr/sbin/iptables-nft-restore",
	"/usr/sbin/ip6tables-nft", "/usr/sbin/ip6tables-nft-save", "/usr/sbin/ip6tables-nft-restore",
	"/usr/sbin/iptables-legacy", "/usr/sbin/iptables-legacy-save", "/usr/sbin/iptables-legacy-restore",
	"/usr/sbin/ip6tables-legacy", "/usr/sbin/ip6tables-legacy-save", "/usr/sbin/ip6tables-legacy-restore",
}

// Alternatives are the names Debian's update-alternatives would point at
// the nft back end (its default), made plain symlinks: the dataplane asks
// `iptables --version` which back end the node uses when no rules of ours
// say so.
var Alternatives = map[string]string{
	"/usr/sbin/iptables": "iptables-nft", "/usr/sbin/iptables-save": "iptables-nft-save", "/usr/sbin/iptables-restore": "iptables-nft-restore",
	"/usr/sbin/ip6tables": "ip6tables-nft", "/usr/sbin/ip6tables-save": "ip6tables-nft-save", "/usr/sbin/ip6tables-restore": "ip6tables-nft-restore",
}

// xtablesDir holds the iptables extensions (matches and targets), which
// iptables loads by name as a rule uses them; the image has those of
// iptables and ip6tables (libxt_, libipt_, libip6t_), not arptables' or
// ebtables'.
const xtablesDir = "/usr/lib/x86_64-linux-gnu/xtables"

// DataFiles are files read at run time: the protocol and service names
// (netbase) and the distribution's identity (base-files).
var DataFiles = []string{"/etc/protocols", "/etc/services", "/etc/ethertypes", "/etc/os-release"}

// libraryDirs are where the dynamic loader looks, in order (Debian's
// multiarch directories; the image has no ld.so.cache).
var libraryDirs = []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/lib64"}

// mergedUsr are Debian's merged-/usr links: a package's /lib/x goes to
// /usr/lib/x, and the image has /lib -> usr/lib.
var mergedUsr = map[string]string{"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}

// entry is one file, directory or symlink of a root file system.
type entry struct {
	hdr  tar.Header // Name is the absolute path; owners and times are normalized when written
	data []byte
	pkg  string // the Debian package it comes from, "" for ours
}

// tree is a root file system in memory, by absolute path (after the
// merged-/usr mapping).
type tree map[string]*entry

// canonical maps an absolute path through the merged-/usr links.
func canonical(p string) string {
	p = path.Clean("/" + p)
	for link, target := range mergedUsr {
		if p == link || strings.HasPrefix(p, link+"/") {
			return "/" + target + p[len(link):]
		}
	}
	return p
}

// addTar adds the entries of a package's file system archive.
func (t tree) addTar(r io.Reader, pkg string) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", pkg, err)
		}
		p := canonical(hdr.Name)
		if p == "/" {
			continue
		}
		e := &entry{hdr: *hdr, pkg: pkg}
		e.hdr.Name = p
		switch hdr.Typeflag {
		case tar.TypeReg:
			if e.data, err = io.ReadAll(tr); err != nil {
				return fmt.Errorf("%s: %s: %w", pkg, p, err)
			}
		case tar.TypeLink: // a hard link becomes a copy of its target
			target := t[canonical(hdr.Linkname)]
			if target == nil {
				return fmt.Errorf("%s: %s: hard link to missing %s", pkg, p, hdr.Linkname)
			}
			e.hdr.Typeflag, e.hdr.Linkname, e.data = tar.TypeReg, "", target.data
		case tar.TypeDir, tar.TypeSymlink:
		default:
			return fmt.Errorf("%s: %s: unexpected tar entry type %q", pkg, p, hdr.Typeflag)
		}
		if t[p] == nil || hdr.Typeflag != tar.TypeDir { // a directory may come in many packages
			t[p] = e
		}
	}
}

// resolve follows symlinks in every component of p, and returns the path
// it names and the symlinks met on the way (which the image needs too).
func (t tree) resolve(p string) (string, []string, error) {
	var links []string
	p = canonical(p)
	for hops := 0; ; hops++ {
		if hops > 40 {
			return "", nil, fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		link, rest := t.firstLink(p)
		if link == "" {
			return p, links, nil
		}
		links = append(links, link)
		target := t[link].hdr.Linkname
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(link), target)
		}
		p = canonical(target + rest)
	}
}

// firstLink returns the first component of p that is a symlink, and the
// rest of p after it.
func (t tree) firstLink(p string) (link, rest string) {
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			continue
		}
		if e := t[p[:i]]; e != nil && e.hdr.Typeflag == tar.TypeSymlink {
			return p[:i], p[i:]
		}
	}
	return "", ""
}

// selector copies entries, with what they need, from a staged tree (every
// package unpacked) into the image's tree.
type selector struct {
	staged, out tree
}

// add copies p and, following symlinks and ELF dependencies, every file it
// needs at run time.
func (s selector) add(p string) error {
	real, links, err := s.staged.resolve(p)
	if err != nil {
		return err
	}
	for _, l := range links {
		s.out[l] = s.staged[l]
	}
	e := s.staged[real]
	if e == nil {
		return fmt.Errorf("%s: in none of the image's packages", p)
	}
	if s.out[real] == e {
		return nil
	}
	s.out[real] = e
	if e.hdr.Typeflag != tar.TypeReg {
		return nil
	}
	needs, err := elfNeeds(e.data)
	if err == errNotELF {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", real, err)
	}
	for _, need := range needs {
		if err := s.add(s.findLibrary(need)); err != nil {
			return fmt.Errorf("%s (package %s) needs %s: %w", real, e.pkg, need, err)
		}
	}
	return nil
}

// findLibrary returns the path of a needed library: as it is if absolute
// (the program interpreter), else the first of libraryDirs holding it.
func (s selector) findLibrary(name string) string {
	if path.IsAbs(name) {
		return name
	}
	for _, dir := range libraryDirs {
		if real, _, err := s.staged.resolve(path.Join(dir, name)); err == nil && s.staged[real] != nil {
			return path.Join(dir, name)
		}
	}
	return path.Join(libraryDirs[0], name)
}

// errNotELF marks a file that is not an ELF object (a script, data).
var errNotELF = errors.New("not ELF")

// elfNeeds returns an ELF object's program interpreter and DT_NEEDED
// libraries, or errNotELF.
func elfNeeds(data []byte) ([]string, error) {
	if !bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		return nil, errNotELF
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var needs []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, err := io.ReadAll(p.Open())
			if err != nil {
				return nil, err
			}
			needs = append(needs, string(bytes.TrimRight(interp, "\x00")))
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, err
	}
	return append(needs, libs...), nil
}

// packages returns the Debian packages that have entries in t, sorted.
func (t tree) packages() []string {
	var pkgs []string
	for _, e := range t {
		if e.pkg != "" && !slices.Contains(pkgs, e.pkg) {
			pkgs = append(pkgs, e.pkg)
		}
	}
	slices.Sort(pkgs)
	return pkgs
}

// addFile adds a regular file of ours.
func (t tree) addFile(p string, mode int64, data []byte) {
	t[p] = &entry{hdr: tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: mode}, data: data}
}

// addDir adds a directory of ours.
func (t tree) addDir(p string, mode int64) {
	t[p] = &entry{hdr: tar.Header{Name: p, Typeflag: tar.TypeDir, Mode: mode}}
}

// addSymlink adds a symlink of ours.
func (t tree) addSymlink(p, target string) {
	t[p] = &entry{hdr: tar.Header{Name: p, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}

// layer writes t as a layer's tar: every parent directory present, entries
// sorted by path, owned by root, with the one modification time epoch and
// no other varying metadata, so the same tree gives the same bytes.
func (t tree) layer(epoch time.Time) ([]byte, error) {
	all := tree{}
	for p, e := range t {
		all[p] = e
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if all[dir] == nil && t[dir] == nil {
				all[dir] = &entry{hdr: tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755}}
			}
		}
	}
	paths := make([]string, 0, len(all))
	for p := range all {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := all[p]
		hdr := &tar.Header{
			Typeflag: e.hdr.Typeflag, Name: strings.TrimPrefix(p, "/"), Linkname: e.hdr.Linkname,
			Mode: e.hdr.Mode & 0o7777, ModTime: epoch, Size: int64(len(e.data)), Format: tar.FormatPAX,
		}
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
