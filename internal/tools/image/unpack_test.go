package image

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// archiveOf writes an image of the given layers (each a list of tar
// entries; a regular file's content is its Linkname field) to an archive.
func archiveOf(t *testing.T, layers ...[]tar.Header) string {
	t.Helper()
	img := empty.Image
	for _, entries := range layers {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			content := ""
			if h.Typeflag == tar.TypeReg {
				content, h.Linkname = h.Linkname, ""
				h.Size = int64(len(content))
			}
			if h.Mode == 0 {
				h.Mode = 0o644
			}
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(content))
		}
		tw.Close()
		data := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "image.tar")
	if _, err := WriteArchive(path, img, "example.com/test:v1"); err != nil {
		t.Fatal(err)
	}
	return path
}

func reg(name, content string) tar.Header {
	return tar.Header{Typeflag: tar.TypeReg, Name: name, Linkname: content}
}

func dir(name string) tar.Header { return tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755} }

// TestUnpackAppliesLayersInOrderWithWhiteouts: a file whiteout removes the
// lower layer's file, an opaque whiteout empties the lower layer's
// directory but not what its own layer adds there, a later layer's file
// replaces an earlier one's, and a name climbing out with ".." stays in
// the root.
func TestUnpackAppliesLayersInOrderWithWhiteouts(t *testing.T) {
	archive := archiveOf(t,
		[]tar.Header{dir("a/"), reg("a/keep", "1"), reg("a/gone", "1"), dir("b/"), reg("b/old", "1"), dir("b/sub/"), reg("b/sub/x", "1"),
			reg("c", "first"), {Typeflag: tar.TypeSymlink, Name: "l", Linkname: "a/keep"}, {Typeflag: tar.TypeReg, Name: "s", Mode: 0o4755, Linkname: "suid"}},
		[]tar.Header{reg("a/.wh.gone", ""), reg("b/-new", "2"), reg("b/.wh..wh..opq", ""), reg("c", "second"), reg("../../escaped", "3")},
	)
	root := t.TempDir()
	if _, err := Unpack(archive, root); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a/keep": "1", "b/-new": "2", "c": "second", "l": "1", "s": "suid", "escaped": "3"}
	for name, content := range want {
		if data, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(data) != content {
			t.Errorf("%s: %q, %v; want %q", name, data, err, content)
		}
	}
	for _, name := range []string{"a/gone", "b/old", "b/sub", "a/.wh.gone", "b/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(root, name)); !os.IsNotExist(err) {
			t.Errorf("%s exists (%v)", name, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "s")); err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("s: mode %v (%v), want setuid 0755", fi.Mode(), err)
	}
}

// TestUnpackRefusesToWriteThroughASymlink: a layer must not place a file
// outside the root through a symlink a lower layer made.
func TestUnpackRefusesToWriteThroughASymlink(t *testing.T) {
	outside := t.TempDir()
	archive := archiveOf(t,
		[]tar.Header{{Typeflag: tar.TypeSymlink, Name: "etc", Linkname: outside}},
		[]tar.Header{reg("etc/passwd", "evil")},
	)
	_, err := Unpack(archive, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "etc/passwd: goes through the symlink /etc") {
		t.Errorf("Unpack = %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "passwd")); !os.IsNotExist(err) {
		t.Errorf("a file was written outside the root (%v)", err)
	}
}
