package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Unpack extracts the image of an OCI archive (its index's first manifest)
// into dir as a container runtime prepares a root file system: layers in
// order, whiteouts honoured (".wh.NAME" removes NAME of the layers below,
// ".wh..wh..opq" empties its directory), owners and modes as recorded. It
// returns the image's config, whose entrypoint and environment a runtime
// would use. Entries that would land outside dir, or pass through a
// symlink, are refused.
func Unpack(archive, dir string) (*v1.ConfigFile, error) {
	blobs, err := readArchive(archive)
	if err != nil {
		return nil, err
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) == 0 {
		return nil, fmt.Errorf("%s: no image in index.json (%v)", archive, err)
	}
	var manifest v1.Manifest
	if err := json.Unmarshal(blobs[blobPath(index.Manifests[0].Digest)], &manifest); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", archive, err)
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(blobs[blobPath(manifest.Config.Digest)], &cfg); err != nil {
		return nil, fmt.Errorf("%s: config: %w", archive, err)
	}
	for i, l := range manifest.Layers {
		data, ok := blobs[blobPath(l.Digest)]
		if !ok {
			return nil, fmt.Errorf("%s: layer %d (%s) is missing", archive, i+1, l.Digest)
		}
		if err := applyLayer(bytes.NewReader(data), dir); err != nil {
			return nil, fmt.Errorf("%s: layer %d: %w", archive, i+1, err)
		}
	}
	return &cfg, nil
}

// readArchive reads every file of a tar into memory, by name.
func readArchive(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if files[hdr.Name], err = io.ReadAll(tr); err != nil {
				return nil, err
			}
		}
	}
}

// applyLayer applies one gzip-compressed layer onto dir: its whiteouts
// first, which remove only what the layers below made, then its entries.
func applyLayer(r io.Reader, dir string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	type file struct {
		hdr  *tar.Header
		data []byte
	}
	var files []file
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		files = append(files, file{hdr, data})
	}
	for _, f := range files {
		if err := whiteout(f.hdr.Name, dir); err != nil {
			return fmt.Errorf("%s: %w", f.hdr.Name, err)
		}
	}
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f.hdr.Name), ".wh.") {
			continue
		}
		if err := applyEntry(bytes.NewReader(f.data), f.hdr, dir); err != nil {
			return fmt.Errorf("%s: %w", f.hdr.Name, err)
		}
	}
	return nil
}

// whiteout carries out name if it is a whiteout.
func whiteout(name, dir string) error {
	base := filepath.Base(name)
	if !strings.HasPrefix(base, ".wh.") {
		return nil
	}
	target, err := within(dir, name)
	if err != nil {
		return err
	}
	if base == ".wh..wh..opq" {
		return emptyDir(filepath.Dir(target))
	}
	return os.RemoveAll(filepath.Join(filepath.Dir(target), strings.TrimPrefix(base, ".wh.")))
}

// applyEntry writes one layer entry.
func applyEntry(r io.Reader, hdr *tar.Header, dir string) error {
	target, err := within(dir, hdr.Name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	if fi, err := os.Lstat(target); err == nil && !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
		if err := os.RemoveAll(target); err != nil { // a later layer replaces it
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	case tar.TypeReg:
		if err := writeFile(target, r); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return err
		}
		return os.Lchown(target, hdr.Uid, hdr.Gid)
	case tar.TypeLink:
		source, err := within(dir, hdr.Linkname)
		if err != nil {
			return err
		}
		return os.Link(source, target)
	default:
		return fmt.Errorf("unsupported entry type %q", hdr.Typeflag)
	}
	if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	return os.Chmod(target, os.FileMode(hdr.Mode&0o777)|modeBits(hdr.Mode))
}

// within returns name's path under dir, refusing names that leave dir or
// whose parent directories include a symlink (a later entry must not
// write through a link an earlier one made).
func within(dir, name string) (string, error) {
	clean := filepath.Clean("/" + name)
	if clean == "/" {
		return "", errors.New("names the root itself")
	}
	target := filepath.Join(dir, clean)
	for p := filepath.Dir(target); len(p) > len(dir); p = filepath.Dir(p) {
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			return "", fmt.Errorf("goes through the symlink %s", strings.TrimPrefix(p, dir))
		}
	}
	return target, nil
}

// emptyDir removes what dir holds (an opaque whiteout), keeping dir.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// modeBits maps tar's setuid, setgid and sticky bits to Go's.
func modeBits(mode int64) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}
