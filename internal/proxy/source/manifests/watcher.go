package manifests

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/svcproxy/svcproxy/internal/proxy/source"
)

// racy is how recent a file's mtime may be for size and mtime alone not to
// prove it unchanged: a write within the same mtime tick (coarse on some
// filesystems) keeps both. Such files are read and hashed on every scan.
const racy = 2 * time.Second

// fileState is what the watcher knows of one file.
type fileState struct {
	size   int64
	mtime  time.Time
	readAt time.Time
	hash   [sha256.Size]byte
	read   bool // hash is of content read successfully

	parsed  []object       // the current content's objects, when valid
	err     error          // why the current content is not valid
	fresh   bool           // parsed is valid but not yet in force
	inForce map[key]object // the objects last accepted from this file
	logged  string         // the last problem logged, "" if none
}

// watcher holds the state between scans. Only Run's goroutine uses it.
type watcher struct {
	dir    string
	log    logr.Logger
	sink   source.Sink
	files  map[string]*fileState
	sent   map[key]object // what the sink has been given
	dirErr string
}

func newWatcher(dir string, log logr.Logger, sink source.Sink) *watcher {
	return &watcher{dir: dir, log: log, sink: sink, files: map[string]*fileState{}, sent: map[key]object{}}
}

// scan reads what changed, decides what is in force and tells the sink.
func (w *watcher) scan() {
	infos, err := w.list()
	if err != nil {
		if msg := err.Error(); msg != w.dirErr {
			w.log.Error(err, "Cannot read the manifests directory; the objects in force stay", "dir", w.dir)
			w.dirErr = msg
		}
		return
	}
	w.dirErr = ""
	for name := range w.files {
		if _, ok := infos[name]; !ok {
			delete(w.files, name)
		}
	}
	names := slices.Sorted(maps.Keys(infos))
	for _, name := range names {
		w.refresh(name, infos[name])
	}
	w.settle(names)
	w.apply()
}

// wanted says whether a directory entry is a manifest.
func wanted(name string) bool {
	switch {
	case strings.HasPrefix(name, "."), strings.HasPrefix(name, "#"), strings.HasSuffix(name, "~"):
		return false
	}
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// list returns the manifests in the directory, following symbolic links.
func (w *watcher) list() (map[string]os.FileInfo, error) {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return nil, err
	}
	out := map[string]os.FileInfo{}
	for _, e := range entries {
		if !wanted(e.Name()) {
			continue
		}
		fi, err := os.Stat(filepath.Join(w.dir, e.Name()))
		if err == nil && fi.Mode().IsRegular() {
			out[e.Name()] = fi
		}
	}
	return out, nil
}

// refresh rereads a file unless its size and mtime show it unchanged, and
// decodes it when its content changed.
func (w *watcher) refresh(name string, fi os.FileInfo) {
	st := w.files[name]
	if st == nil {
		st = &fileState{}
		w.files[name] = st
	}
	if st.read && st.size == fi.Size() && st.mtime.Equal(fi.ModTime()) && fi.ModTime().Before(st.readAt.Add(-racy)) {
		return
	}
	readAt := time.Now()
	data, err := os.ReadFile(filepath.Join(w.dir, name))
	if err != nil {
		st.read, st.parsed, st.err, st.fresh = false, nil, err, false
		return
	}
	st.size, st.mtime, st.readAt = fi.Size(), fi.ModTime(), readAt
	h := sha256.Sum256(data)
	if st.read && h == st.hash {
		return
	}
	st.read, st.hash = true, h
	st.parsed, st.err = decodeFile(name, data)
	st.fresh = st.err == nil
	if st.err != nil {
		st.parsed = nil
	}
}

// settle puts valid new content in force unless it would define an object
// another file already defines, then reports each file's problems. It
// repeats until nothing more can be accepted, so moving an object from one
// file to another in one go is no conflict.
func (w *watcher) settle(names []string) {
	owner := map[key]string{}
	for name, st := range w.files {
		for k := range st.inForce {
			owner[k] = name
		}
	}
	for progress := true; progress; {
		progress = false
		for _, name := range names {
			st := w.files[name]
			if !st.fresh || conflicts(name, st.parsed, owner) != nil {
				continue
			}
			for k := range st.inForce {
				delete(owner, k)
			}
			st.inForce = map[key]object{}
			for _, o := range st.parsed {
				st.inForce[o.key], owner[o.key] = o, name
			}
			st.fresh, progress = false, true
		}
	}
	for _, name := range names {
		st := w.files[name]
		err := st.err
		if st.fresh {
			err = conflicts(name, st.parsed, owner)
		}
		w.report(name, st, err)
	}
}

// conflicts names the objects of file that another file defines.
func conflicts(file string, objs []object, owner map[key]string) error {
	var errs []error
	for _, o := range objs {
		if other, ok := owner[o.key]; ok && other != file {
			errs = append(errs, fmt.Errorf("%s: %s (%s): duplicate: %s is also defined in %s",
				file, o.where, o.key, o.key, other))
		}
	}
	return errors.Join(errs...)
}

// report logs a file's problem once per distinct problem, and its recovery.
func (w *watcher) report(name string, st *fileState, err error) {
	if err == nil {
		if st.logged != "" {
			w.log.Info("Manifest valid again, now in force", "file", name)
		}
		st.logged = ""
		return
	}
	msg := err.Error()
	if msg == st.logged {
		return
	}
	st.logged = msg
	w.log.Error(err, "Manifest not applied; the objects it last defined stay in force", "file", name, "objectsInForce", len(st.inForce))
}

// apply tells the sink of objects added, changed and gone since last time.
// Services are set before slices and deleted after them.
func (w *watcher) apply() {
	desired := map[key]object{}
	for _, st := range w.files {
		maps.Copy(desired, st.inForce)
	}
	for _, k := range sortedKeys(desired) {
		if old, ok := w.sent[k]; !ok || !same(old, desired[k]) {
			w.set(desired[k])
		}
	}
	gone := sortedKeys(w.sent)
	slices.Reverse(gone)
	for _, k := range gone {
		if _, ok := desired[k]; !ok {
			w.remove(w.sent[k])
		}
	}
	w.sent = desired
}

func same(a, b object) bool {
	return reflect.DeepEqual(a.svc, b.svc) && reflect.DeepEqual(a.slice, b.slice)
}

// sortedKeys orders Services before EndpointSlices, then by namespace and name.
func sortedKeys(m map[key]object) []key {
	return slices.SortedFunc(maps.Keys(m), func(a, b key) int {
		return cmp.Or(-strings.Compare(a.kind, b.kind), strings.Compare(a.namespace, b.namespace),
			strings.Compare(a.name, b.name))
	})
}

// set and remove hand the sink copies, so it may keep or change them.
func (w *watcher) set(o object) {
	if o.svc != nil {
		w.sink.SetService(o.svc.DeepCopy())
	} else {
		w.sink.SetSlice(o.slice.DeepCopy())
	}
}

func (w *watcher) remove(o object) {
	if o.svc != nil {
		w.sink.DeleteService(o.svc.DeepCopy())
	} else {
		w.sink.DeleteSlice(o.slice.DeepCopy())
	}
}
