package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// ReplaceHook, when set (tests only), is called after each step of ReplaceDir with the
// step's name: "exchanged" (renameat2 swapped the directories), "moved-old" (fallback:
// the old directory renamed away, the new one not yet in place).
var ReplaceHook func(step string)

// ReplaceNoExchange makes ReplaceDir take its two-rename fallback (tests only).
var ReplaceNoExchange bool

// oldInfix names an old directory moved aside by the fallback: dst + ".old-" + digits.
const oldInfix = ".old-"

// ReplaceDir moves a finished temporary directory tmp (a sibling of dst) to dst.
//
// An existing dst is swapped with tmp in one renameat2(RENAME_EXCHANGE), so at every
// instant dst is either the complete old or the complete new directory; the old one,
// now at tmp, is then removed. Where the filesystem cannot exchange, dst is renamed to
// dst.old-N and tmp to dst: a crash between the two renames leaves no dst but dst.old-N,
// which RecoverReplaced (called by the next writer of dst, under its lock) renames back.
// A crash at any other point leaves a .tmp-NAME-N or dst.old-N that RecoverReplaced
// removes.
func ReplaceDir(tmp, dst string) error {
	if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
		return os.Rename(tmp, dst)
	} else if err != nil {
		return err
	}
	if !ReplaceNoExchange {
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
		if err == nil {
			syncDir(filepath.Dir(dst))
			hook("exchanged")
			return os.RemoveAll(tmp) // the old directory now
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("replace %q: %w", dst, err)
		}
	}
	old := dst + oldInfix + digitsOf(filepath.Base(tmp))
	if err := os.Rename(dst, old); err != nil {
		return err
	}
	hook("moved-old")
	if err := os.Rename(tmp, dst); err != nil {
		if rerr := os.Rename(old, dst); rerr != nil {
			return fmt.Errorf("replace %q: %w (and the old directory stays at %q: %v)", dst, err, old, rerr)
		}
		return err
	}
	syncDir(filepath.Dir(dst))
	return os.RemoveAll(old)
}

func hook(step string) {
	if ReplaceHook != nil {
		ReplaceHook(step)
	}
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: some filesystems refuse fsync on directories
		d.Close()
	}
}

// digitsOf is the random decimal suffix os.MkdirTemp put after the last "-".
func digitsOf(name string) string {
	if i := strings.LastIndex(name, "-"); i >= 0 && allDigits(name[i+1:]) {
		return name[i+1:]
	}
	return "0"
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// RecoverReplaced undoes what killed writers of dst left beside it; the caller holds
// dst's lock (LockReplaced), so no live writer owns them. When dst is missing but an old
// copy moved aside by ReplaceDir's fallback exists, the newest is renamed back to dst.
// Then every dst.old-N and .tmp-NAME-N (temporary directories of unfinished writes) is
// removed. It returns what it did, for a log line.
func RecoverReplaced(dst string) ([]string, error) {
	dst = filepath.Clean(dst)
	parent, name := filepath.Dir(dst), filepath.Base(dst)
	entries, err := os.ReadDir(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var olds, tmps []string
	for _, e := range entries {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, name+oldInfix) && allDigits(n[len(name+oldInfix):]):
			olds = append(olds, filepath.Join(parent, n))
		case strings.HasPrefix(n, ".tmp-"+name+"-") && allDigits(n[len(".tmp-"+name+"-"):]):
			tmps = append(tmps, filepath.Join(parent, n))
		}
	}
	var did []string
	if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) && len(olds) > 0 {
		sort.Slice(olds, func(i, j int) bool { return modTime(olds[i]) > modTime(olds[j]) })
		if err := os.Rename(olds[0], dst); err != nil {
			return did, fmt.Errorf("restore %q from %q: %w", dst, olds[0], err)
		}
		did = append(did, "restored "+dst+" from "+filepath.Base(olds[0]))
		olds = olds[1:]
	}
	for _, p := range append(olds, tmps...) {
		if err := os.RemoveAll(p); err != nil {
			return did, err
		}
		did = append(did, "removed "+filepath.Base(p))
	}
	return did, nil
}

func modTime(p string) int64 {
	st, err := os.Lstat(p)
	if err != nil {
		return 0
	}
	return st.ModTime().UnixNano()
}

// RemoveStaleTemps removes the temporary files WriteFileAtomic leaves when killed
// (.NAME.tmp-N) directly in dir; the caller holds dir's lock.
func RemoveStaleTemps(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		n := e.Name()
		i := strings.LastIndex(n, ".tmp-")
		if !e.Type().IsRegular() || !strings.HasPrefix(n, ".") || i <= 0 || !allDigits(n[i+len(".tmp-"):]) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			return removed, err
		}
		removed = append(removed, n)
	}
	return removed, nil
}
