package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ownedExts are the file kinds prepare, import and export write at the top of their output
// (they write no subdirectories): models, external data, weights, safetensors, JSON
// configs and tokenizers, ONNX Runtime adapters.
var ownedExts = map[string]bool{".onnx": true, ".data": true, ".bin": true, ".safetensors": true,
	".json": true, ".onnx_adapter": true, ".model": true}

// ownedName reports whether a replacing command could have written the entry name.
func ownedName(name string) bool {
	return name == LockFile || name == ".verified" || ownedExts[filepath.Ext(name)]
}

// CheckReplace is the one rule for commands that replace an output directory as a whole
// (prepare, import, export); the caller holds the output's lock (LockReplaced). A missing
// out is fine. An existing one needs force, must be a real directory (not a symbolic link:
// replacing it would replace the link, not what it points to), and must hold what the
// command writes (marker, beside regular files of the kinds these commands write) and
// nothing else: no subdirectory (a run, a nested output, user files) and no file of another
// kind. An empty directory is fine.
func CheckReplace(out string, force bool, marker, cmd string) error {
	st, err := os.Lstat(out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("output %q: %w", out, err)
	}
	if st.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("output %q is a symbolic link: give the directory it points to, or another --out", out)
	}
	if !st.IsDir() {
		if !force {
			return fmt.Errorf("output %q exists: pass --force to replace it", out)
		}
		return fmt.Errorf("output %q exists and is not a directory", out)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("output %q: %w", out, err)
	}
	hasMarker, n, foreign := false, 0, ""
	for _, e := range entries {
		name := e.Name()
		if name == LockFile {
			continue
		}
		n++
		if (!e.Type().IsRegular() || !ownedName(name)) && foreign == "" {
			foreign = name
		}
		hasMarker = hasMarker || name == marker
	}
	switch {
	case n == 0:
		return nil
	case !force:
		return fmt.Errorf("output %q exists: pass --force to replace it", out)
	case foreign != "":
		return fmt.Errorf("output %q holds %q, which %s does not write (a run, another output or your files): refusing to replace it (--force replaces only "+
			"%s's own output); move it away or choose another --out",
			out, foreign, cmd, cmd)
	case !hasMarker:
		return fmt.Errorf("output %q is a non-empty directory without %s: refusing to replace it (--force replaces only %s's own output)", out, marker, cmd)
	}
	return nil
}

// LockInside takes, besides LockReplaced's lock, the lock a writer that fills out in place
// (train, bench) holds, out/.ortq.lock, creating out when missing (Release removes it again
// if it stays empty): a replacing command holds it until the swap is done, so it never
// swaps away a directory a live run writes into, and no run starts in it meanwhile. A
// symbolic link or a non-directory at out gives a nil Lock (CheckReplace refuses them).
func LockInside(out string) (*Lock, error) {
	if st, err := os.Lstat(out); err == nil && !st.IsDir() {
		return nil, nil
	}
	return LockDir(out)
}
