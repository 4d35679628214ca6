package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// layerSource is one layer to be: what it holds, and its files.
type layerSource struct {
	what  string
	files tree
}

// assemble makes the image from its layers, in order, with svcproxy's
// config. The manifest has Docker's media types (schema 2), which every
// consumer takes, and no annotations (the config's labels say it all): so
// it is byte for byte the manifest that readers of docker save's
// manifest.json (crane push) make up, and the image has one digest
// whichever way it is loaded.
func assemble(opts Options, sources []layerSource) (v1.Image, []Layer, error) {
	var adds []mutate.Addendum
	var layers []Layer
	created := v1.Time{Time: opts.Epoch.UTC()}
	for _, src := range sources {
		data, err := src.files.layer(opts.Epoch)
		if err != nil {
			return nil, nil, err
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
			tarball.WithMediaType(types.DockerLayer), tarball.WithCompressionLevel(gzip.DefaultCompression), tarball.WithCompressedCaching)
		if err != nil {
			return nil, nil, err
		}
		info := Layer{What: src.what, Files: src.files.countFiles()}
		if info.Digest, err = l.Digest(); err != nil {
			return nil, nil, err
		}
		if info.Size, err = l.Size(); err != nil {
			return nil, nil, err
		}
		layers = append(layers, info)
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{Created: created, CreatedBy: src.what}})
	}
	img, err := mutate.Append(empty.Image, adds...)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS, cfg.Created = Arch, "linux", created
	cfg.Config = v1.Config{
		Entrypoint: []string{Entrypoint},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		WorkingDir: "/",
		Labels:     labels(opts),
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, nil, err
	}
	return img, layers, nil
}

// countFiles counts the entries that are not directories.
func (t tree) countFiles() int {
	n := 0
	for _, e := range t {
		if e.hdr.Typeflag != tar.TypeDir {
			n++
		}
	}
	return n
}

// WriteArchive writes img to path as one tar that is both an OCI image
// layout (oci-layout, index.json, blobs/sha256/...: what ctr images import,
// kind load image-archive and docker load of Docker 25 and later read) and
// a docker save archive (manifest.json naming the same blobs: what older
// docker load and crane push read). The index names the image ref both
// ways containerd looks for a name. It returns the archive's size.
func WriteArchive(path string, img v1.Image, ref string) (int64, error) {
	blobs, err := imageBlobs(img)
	if err != nil {
		return 0, err
	}
	desc, err := manifestDescriptor(img, ref)
	if err != nil {
		return 0, err
	}
	index, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{desc}})
	if err != nil {
		return 0, err
	}
	dockerManifest, err := dockerSaveManifest(img, ref)
	if err != nil {
		return 0, err
	}
	files := map[string][]byte{
		"oci-layout":    []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json":    index,
		"manifest.json": dockerManifest,
	}
	for h, data := range blobs {
		files[blobPath(h)] = data
	}
	return writeTar(path, files)
}

// imageBlobs returns the manifest, config and compressed layers by digest.
func imageBlobs(img v1.Image) (map[v1.Hash][]byte, error) {
	blobs := map[v1.Hash][]byte{}
	add := func(data []byte, err error) error {
		if err != nil {
			return err
		}
		h, _, err := v1.SHA256(bytes.NewReader(data))
		blobs[h] = data
		return err
	}
	if err := add(img.RawManifest()); err != nil {
		return nil, err
	}
	if err := add(img.RawConfigFile()); err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err := add(data, err); err != nil {
			return nil, err
		}
	}
	return blobs, nil
}

// manifestDescriptor describes the manifest in index.json, named ref.
func manifestDescriptor(img v1.Image, ref string) (v1.Descriptor, error) {
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	_, tag, _ := strings.Cut(ref[strings.LastIndex(ref, "/")+1:], ":")
	return v1.Descriptor{MediaType: mt, Digest: digest, Size: size,
		Platform: &v1.Platform{OS: "linux", Architecture: Arch},
		Annotations: map[string]string{
			"io.containerd.image.name":          ref, // ctr images import, kind load
			"org.opencontainers.image.ref.name": tag, // the OCI layout's own name
		}}, nil
}

// dockerSaveManifest is docker save's manifest.json for img, named ref.
func dockerSaveManifest(img v1.Image, ref string) ([]byte, error) {
	cfg, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	d := tarball.Descriptor{Config: blobPath(cfg), RepoTags: []string{ref}}
	for _, l := range m.Layers {
		d.Layers = append(d.Layers, blobPath(l.Digest))
	}
	return json.Marshal(tarball.Manifest{d})
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// writeTar writes files, sorted, with their directories, owned by root and
// dated zero, to path (through a temporary file, renamed when complete).
func writeTar(path string, files map[string][]byte) (int64, error) {
	names := []string{"blobs/", "blobs/sha256/"}
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".image-*.tar")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	for _, name := range names {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg,
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if strings.HasSuffix(name, "/") {
			hdr.Mode, hdr.Typeflag = 0o755, tar.TypeDir
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return 0, err
		}
		if _, err := tw.Write(files[name]); err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	return size, nil
}
