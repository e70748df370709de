package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ortq/ortq/internal/fsutil"
)

// DataFile is one external data file of an artifacts directory as prepare wrote it.
type DataFile struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// VerifiedFile in an artifacts directory records, per data file, the SHA-256 it was last
// found to have and the file's identity then (size, mtime, device, inode): while those are
// unchanged, VerifyHashesOnce trusts the recorded hash instead of reading the file again.
const VerifiedFile = ".verified"

// redo is the advice every size or hash mismatch ends with.
func redo(dir string) string {
	return fmt.Sprintf("re-create the artifacts with `ortq prepare --force --out %s` (and the --model and options they were prepared with)", dir)
}

// path returns dir/f.File, refusing a name that is not a plain file name (a manifest
// must not point outside its directory).
func (f DataFile) path(dir string) (string, error) {
	if f.File == "" || f.File != filepath.Base(f.File) || f.File == "." || f.File == ".." {
		return "", fmt.Errorf("artifacts %q: manifest.json names data file %q, not a file in the directory", dir, f.File)
	}
	return filepath.Join(dir, f.File), nil
}

// CheckSizes compares the size of every recorded data file with the manifest (a stat
// each; nothing to check in a manifest that records none).
func (m *Manifest) CheckSizes(dir string) error {
	for _, f := range m.DataFiles {
		p, err := f.path(dir)
		if err != nil {
			return err
		}
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("artifacts %q: %s: %w: %s", dir, f.File, unwrapPath(err), redo(dir))
		}
		if st.Size() != f.Size {
			return fmt.Errorf("artifacts %q: %s is %d bytes, manifest.json records %d (truncated or replaced): %s", dir, f.File, st.Size(), f.Size, redo(dir))
		}
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// HashFile returns the size and SHA-256 (hex) of a file, read in one streaming pass.
func HashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// VerifyHashes checks the size and SHA-256 of every recorded data file, reading each one
// whole, and records the verified state (VerifiedFile) when they all match.
func (m *Manifest) VerifyHashes(dir string) error {
	if err := m.CheckSizes(dir); err != nil {
		return err
	}
	for _, f := range m.DataFiles {
		if err := m.verifyOne(dir, f); err != nil {
			return err
		}
	}
	// Recording is an optimisation: a read-only artifacts directory is verified again
	// next time.
	_ = m.RecordVerified(dir)
	return nil
}

func (m *Manifest) verifyOne(dir string, f DataFile) error {
	p, err := f.path(dir)
	if err != nil {
		return err
	}
	n, sum, err := HashFile(p)
	if err != nil {
		return fmt.Errorf("artifacts %q: %s: %w: %s", dir, f.File, unwrapPath(err), redo(dir))
	}
	if n != f.Size {
		return fmt.Errorf("artifacts %q: %s is %d bytes, manifest.json records %d (truncated or replaced): %s", dir, f.File, n, f.Size, redo(dir))
	}
	if sum != f.SHA256 {
		return fmt.Errorf("artifacts %q: %s is damaged: its SHA-256 is %s, manifest.json records %s: %s", dir, f.File, sum, f.SHA256, redo(dir))
	}
	return nil
}

// fileState is what VerifiedFile records about one data file.
type fileState struct {
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
}

func stateOf(p string) (fileState, error) {
	st, err := os.Stat(p)
	if err != nil {
		return fileState{}, err
	}
	s := fileState{Size: st.Size(), MtimeNS: st.ModTime().UnixNano()}
	// Device and inode too: a copy (cp -p, rsync -a) keeps size and mtime but is a new
	// file whose bytes were never hashed.
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.Dev, s.Ino = uint64(sys.Dev), uint64(sys.Ino)
	}
	return s, nil
}

// VerifyHashesOnce is VerifyHashes for a directory used again and again: files whose
// VerifiedFile entry still matches the manifest's hash and the file's size, mtime and
// inode are not read; hashed reports whether any file was. A changed file (a write moves
// its mtime) is hashed again.
func (m *Manifest) VerifyHashesOnce(dir string) (hashed bool, err error) {
	if err := m.CheckSizes(dir); err != nil {
		return false, err
	}
	recorded := map[string]fileState{}
	if b, err := fsutil.ReadLimited(filepath.Join(dir, VerifiedFile), VerifiedFile, 1<<20); err == nil {
		_ = json.Unmarshal(b, &recorded) // a damaged record only costs a hash
	}
	for _, f := range m.DataFiles {
		p, err := f.path(dir)
		if err != nil {
			return hashed, err
		}
		now, err := stateOf(p)
		if err == nil {
			now.SHA256 = f.SHA256
			if recorded[f.File] == now {
				continue
			}
		}
		hashed = true
		if err := m.verifyOne(dir, f); err != nil {
			return hashed, err
		}
	}
	if hashed {
		_ = m.RecordVerified(dir)
	}
	return hashed, nil
}

// RecordVerified writes VerifiedFile for the data files as they are now, stating that
// their bytes hash to the manifest's SHA-256: prepare calls it for the file it has just
// written and hashed, VerifyHashes after reading them. It is written to a temp file and
// renamed (by hand: internal/fsutil is an ortq package, which manifest does not import).
func (m *Manifest) RecordVerified(dir string) error {
	if len(m.DataFiles) == 0 {
		return nil
	}
	rec := map[string]fileState{}
	for _, f := range m.DataFiles {
		p, err := f.path(dir)
		if err != nil {
			return err
		}
		s, err := stateOf(p)
		if err != nil {
			return err
		}
		s.SHA256 = f.SHA256
		rec[f.File] = s
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, VerifiedFile+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, VerifiedFile))
}
