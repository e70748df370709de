package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LockFile is the name of the lock file that `ortq train` and `ortq bench` hold inside
// their output directory for the whole run.
const LockFile = ".ortq.lock"

// Lock is an exclusive flock(2) on a lock file: one writer per output. The kernel
// releases a flock when its holder dies, however it dies, so a lock file left by a
// killed run (it still names the dead pid) never blocks the next one.
type Lock struct {
	f       *os.File
	path    string
	what    string // the output the lock guards
	created string // the directory the lock created, removed on Release if left empty
}

// LockDir locks the output directory dir (created if missing) through dir/.ortq.lock,
// for writers that fill dir in place (train, bench).
func LockDir(dir string) (*Lock, error) {
	created := ""
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		created = dir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("output %q: %w", dir, err)
	}
	l, err := lockPath(filepath.Join(dir, LockFile), dir)
	if err != nil {
		if created != "" {
			os.Remove(dir)
		}
		return nil, err
	}
	l.created = created
	return l, nil
}

// LockReplaced locks an output that is replaced as a whole (ReplaceDir: prepare, import,
// synth) through a lock file beside it, parent/.NAME.ortq.lock: a lock inside would move
// away with the old directory.
func LockReplaced(out string) (*Lock, error) {
	out = filepath.Clean(out)
	parent := filepath.Dir(out)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("output %q: %w", out, err)
	}
	return lockPath(filepath.Join(parent, "."+filepath.Base(out)+LockFile), out)
}

// lockPath takes the flock on path without waiting. The lock file is removed on
// Release; a second process may have opened it just before, so after locking, the
// path must still name the file locked (else it was released and unlinked meanwhile:
// try again on the new file).
func lockPath(path, what string) (*Lock, error) {
	for attempt := 0; ; attempt++ {
		// O_NOFOLLOW: a symbolic link planted at the lock's name must not make the
		// holder's pid overwrite the file it points to.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o644)
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("output %q: lock %q is a symbolic link: remove it (ortq never writes through one)", what, path)
		}
		if err != nil {
			return nil, fmt.Errorf("output %q: lock %q: %w", what, path, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := readHolder(f)
			f.Close()
			return nil, fmt.Errorf("output %q is being written by another ortq process (%s; lock %s): wait for it to finish or choose another --out", what, holder, path)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("output %q: lock %q: %w", what, path, err)
		}
		var fst, pst syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &fst) != nil || syscall.Lstat(path, &pst) != nil || fst.Ino != pst.Ino || fst.Dev != pst.Dev {
			f.Close()
			if attempt < 10 {
				continue
			}
			return nil, fmt.Errorf("output %q: lock %q keeps being replaced", what, path)
		}
		// The holder's pid and command line, for the message a second writer gets.
		rec := strconv.Itoa(os.Getpid()) + "\n" + strings.Join(os.Args, " ") + "\n"
		if err := f.Truncate(0); err == nil {
			f.WriteAt([]byte(rec), 0)
		}
		return &Lock{f: f, path: path, what: what}, nil
	}
}

// readHolder describes the process holding the lock from what it wrote into the file
// (it may not have written it yet: a few short retries).
func readHolder(f *os.File) string {
	for i := 0; i < 20; i++ {
		b := make([]byte, 4096)
		n, _ := f.ReadAt(b, 0)
		pid, cmd, ok := strings.Cut(string(b[:n]), "\n")
		if ok {
			if _, err := strconv.Atoi(pid); err == nil {
				if cmd = strings.TrimSpace(cmd); cmd != "" {
					if fields := strings.Fields(cmd); len(fields) > 0 {
						fields[0] = filepath.Base(fields[0])
						cmd = strings.Join(fields, " ")
					}
					if len(cmd) > 200 {
						cmd = cmd[:200] + "…"
					}
					return "pid " + pid + ": " + cmd
				}
				return "pid " + pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "pid unknown"
}

// Release removes the lock file and drops the lock; the directory LockDir created is
// removed too when nothing was written into it. Safe on a nil Lock and twice.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	// Unlink while still holding the lock: a waiter that opened the old file notices
	// (lockPath compares inodes) and retries on a fresh one. Only our own file: after a
	// replacing command swapped its directory away, the path may name another writer's.
	var fst, pst syscall.Stat_t
	if syscall.Fstat(int(l.f.Fd()), &fst) == nil && syscall.Lstat(l.path, &pst) == nil && fst.Ino == pst.Ino && fst.Dev == pst.Dev {
		os.Remove(l.path)
	}
	l.f.Close()
	l.f = nil
	if l.created != "" {
		os.Remove(l.created) // fails, as it should, unless empty
	}
}
