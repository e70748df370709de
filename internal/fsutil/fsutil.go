package fsutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFileAtomic writes path through write so that readers (and a crash at
// any moment) see either the old file or the complete new one: data goes to a
// temp file in the same directory, is flushed and fsynced, renamed over path,
// and the directory is fsynced so the rename itself survives power loss.
// On any error the temp file is removed and path is untouched.
func WriteFileAtomic(path string, perm os.FileMode, write func(w *bufio.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	if err = write(w); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err = w.Flush(); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %q: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		// Best effort: some filesystems refuse fsync on directories.
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// WriteFile is WriteFileAtomic for data already in memory.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFileAtomic(path, perm, func(w *bufio.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// ReadBounded reads a whole file that must not exceed limit bytes, without allocating
// more than limit+1 bytes whatever the file's size: for untrusted inputs.
func ReadBounded(path string, limit int64) ([]byte, error) {
	return ReadLimited(path, "file", limit)
}

// ReadLimited is ReadBounded for a file of the given kind ("tokenizer.json", "manifest",
// …), named in the error with its limit. The bound is kept by reading (at most limit+1
// bytes), not by stat, which says 0 for a pipe or a device; devices (/dev/zero) are
// refused at once.
func ReadLimited(path, kind string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
		return nil, fmt.Errorf("%s %q is a device, not a file", kind, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s %q: %w", kind, path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s %q is larger than %d bytes, the limit for a %s: is it the right file?", kind, path, limit, kind)
	}
	return b, nil
}
