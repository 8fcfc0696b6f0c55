// Package fs is a blob.Store on a local directory, for single-node set-ups
// and tests. Objects live at <root>/<key>; each object's content type lives
// at <root>/_meta/<key>; writes in progress live in <root>/_uploads and are
// renamed into place only after verification, so a visible file is always
// complete and correct. Keys never start with "_" (blob.ValidKey), so the
// bookkeeping directories can never collide with an object.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/k8s-selfhost-repo/k8s-selfhost-repo/internal/blob"
)

const (
	uploadsDir = "_uploads"
	metaDir    = "_meta"
	// staleUpload is how old a leftover upload must be before New removes
	// it: far longer than any fill, so a live writer of another process
	// sharing the root is never pulled out from under it.
	staleUpload = time.Hour
)

// Store is a filesystem blob.Store. It is safe for concurrent use, also by
// several processes sharing the root.
type Store struct {
	root    string
	uploads string
	meta    string
}

var _ blob.Store = (*Store)(nil)

// New returns a Store rooted at root, creating the directory if needed, and
// removes uploads left behind by a crash.
func New(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("fs store root %s: %w", root, err)
	}
	s := &Store{root: abs, uploads: filepath.Join(abs, uploadsDir), meta: filepath.Join(abs, metaDir)}
	for _, dir := range []string{s.root, s.uploads, s.meta} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("fs store root: %w", err)
		}
	}
	if err := s.removeStaleUploads(time.Now().Add(-staleUpload)); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) removeStaleUploads(before time.Time) error {
	entries, err := os.ReadDir(s.uploads)
	if err != nil {
		return fmt.Errorf("fs store clean uploads: %w", err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(before) {
			continue // vanished meanwhile, or possibly still being written
		}
		if err := os.Remove(filepath.Join(s.uploads, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("fs store clean uploads: %w", err)
		}
	}
	return nil
}

// paths returns the data and meta file of key, or an error wrapping
// blob.ErrInvalidKey. The containment check is a second line of defence
// behind blob.ValidKey.
func (s *Store) paths(op, key string) (data, meta string, err error) {
	if !blob.ValidKey(key) {
		return "", "", fmt.Errorf("fs %s %q: %w", op, key, blob.ErrInvalidKey)
	}
	data = filepath.Join(s.root, filepath.FromSlash(key))
	meta = filepath.Join(s.meta, filepath.FromSlash(key))
	if !within(s.root, data) || !within(s.meta, meta) || within(s.uploads, data) || within(s.meta, data) {
		return "", "", fmt.Errorf("fs %s %q: %w: outside the store", op, key, blob.ErrInvalidKey)
	}
	return data, meta, nil
}

func within(dir, path string) bool {
	return strings.HasPrefix(path, dir+string(filepath.Separator))
}

// isNotExist also counts ENOTDIR: a key below a path that is a file (or a
// directory where a file is expected) simply does not exist as an object.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	data, meta, err := s.paths("stat", key)
	if err != nil {
		return blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, fmt.Errorf("fs stat %s: %w", key, err)
	}
	fi, err := os.Stat(data)
	if err != nil || !fi.Mode().IsRegular() {
		return blob.Info{}, s.statErr("stat", key, err)
	}
	return blob.Info{Size: fi.Size(), ModTime: fi.ModTime(), ContentType: readType(meta)}, nil
}

func (s *Store) statErr(op, key string, err error) error {
	if err == nil || isNotExist(err) { // nil: a directory, not an object
		return fmt.Errorf("fs %s %s: %w", op, key, blob.ErrNotFound)
	}
	return fmt.Errorf("fs %s %s: %w", op, key, err)
}

// readType returns the stored content type; a missing meta file (an object
// placed by hand) means the default type.
func readType(meta string) string {
	b, err := os.ReadFile(meta)
	if err != nil {
		return blob.DefaultContentType
	}
	return blob.ContentTypeOr(string(b))
}

// Open implements blob.Store. A whole-object read returns the *os.File
// itself, and a range returns a reader whose WriteTo hands net/http an
// *io.LimitedReader over the file: both let the server use sendfile.
func (s *Store) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	data, _, err := s.paths("open", key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fs open %s: %w", key, err)
	}
	f, err := os.Open(data)
	if err != nil {
		return nil, s.statErr("open", key, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		_ = f.Close() // read-only; the error below is the one to report
		return nil, s.statErr("open", key, err)
	}
	size := fi.Size()
	if offset < 0 || offset > size {
		_ = f.Close() // read-only; the error below is the one to report
		return nil, fmt.Errorf("fs open %s: offset %d outside object of %d bytes", key, offset, size)
	}
	if offset == 0 && length < 0 {
		return f, nil
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		_ = f.Close() // read-only; the error below is the one to report
		return nil, fmt.Errorf("fs open %s: %w", key, err)
	}
	n := size - offset
	if length >= 0 && length < n {
		n = length
	}
	return &fileRange{f: f, lr: io.LimitedReader{R: f, N: n}}, nil
}

// fileRange is a byte range of an open file.
type fileRange struct {
	f  *os.File
	lr io.LimitedReader
}

func (r *fileRange) Read(p []byte) (int, error) { return r.lr.Read(p) }
func (r *fileRange) Close() error               { return r.f.Close() }

// WriteTo lets io.Copy reach w's ReadFrom with the *io.LimitedReader of an
// *os.File, the shape net.TCPConn turns into sendfile.
func (r *fileRange) WriteTo(w io.Writer) (int64, error) { return io.Copy(w, &r.lr) }

// Put implements blob.Store: a temporary file renamed over the old one, so
// readers see the old or the new record, never a mix.
func (s *Store) Put(ctx context.Context, key string, data []byte, contentType string) error {
	path, meta, err := s.paths("put", key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs put %s: %w", key, err)
	}
	f, err := os.CreateTemp(s.uploads, "put-*")
	if err != nil {
		return fmt.Errorf("fs put %s: %w", key, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.place(f.Name(), path, meta, contentType)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("fs put %s: %w", key, err)
	}
	return nil
}

// place makes the complete, synced file tmp visible at path. The content
// type is written first so a visible object always has its type.
func (s *Store) place(tmp, path, meta, contentType string) error {
	if err := s.writeMeta(meta, contentType); err != nil {
		return err
	}
	// The directory is not synced after the rename: a crash may lose the
	// object (a later cache miss), but it can never expose a partial one.
	return renameInto(tmp, path)
}

func (s *Store) writeMeta(meta, contentType string) error {
	f, err := os.CreateTemp(s.uploads, "meta-*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(contentType)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = renameInto(f.Name(), meta)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// renameInto renames tmp to path, creating path's parent directories.
func renameInto(tmp, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Delete implements blob.Store. The data goes first, so a visible object
// never lacks its type. Empty directories are left: removing them would
// race with a writer creating the same directory for its rename.
func (s *Store) Delete(ctx context.Context, key string) error {
	path, meta, err := s.paths("delete", key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs delete %s: %w", key, err)
	}
	for _, p := range []string{path, meta} {
		if err := os.Remove(p); err != nil && !isNotExist(err) {
			return fmt.Errorf("fs delete %s: %w", key, err)
		}
	}
	return nil
}

// List implements blob.Store. It walks only the directory named by the
// prefix up to its last "/", and prunes directories that cannot match.
func (s *Store) List(ctx context.Context, prefix string, fn func(key string, info blob.Info) error) error {
	if !blob.ValidPrefix(prefix) {
		return fmt.Errorf("fs list %q: %w", prefix, blob.ErrInvalidKey)
	}
	start := s.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	err := filepath.WalkDir(start, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if isNotExist(err) {
				return nil // vanished during the walk, or no such prefix
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(s.root, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if path == start {
				return nil
			}
			dir := key + "/"
			if strings.HasPrefix(key, "_") || !strings.HasPrefix(dir, prefix) && !strings.HasPrefix(prefix, dir) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) || !blob.ValidKey(key) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if isNotExist(err) {
				return nil
			}
			return err
		}
		return fn(key, blob.Info{Size: fi.Size(), ModTime: fi.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("fs list %s: %w", prefix, err)
	}
	return nil
}
