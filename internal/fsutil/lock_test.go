package fsutil

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLockOneWriter: a second lock of the same output is refused naming the holder's pid
// and the output; after Release (or with a stale lock file of a dead process, whose flock
// the kernel dropped) the lock is taken again.
func TestLockOneWriter(t *testing.T) {
	for _, c := range []struct {
		name string
		lock func(string) (*Lock, error)
	}{{"dir", LockDir}, {"replaced", LockReplaced}} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			a, err := c.lock(out)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.lock(out)
			if err == nil || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), out) {
				t.Fatalf("second lock: %v", err)
			}
			lockFile := a.path
			a.Release()
			a.Release()
			if _, err := os.Stat(lockFile); !os.IsNotExist(err) {
				t.Errorf("lock file %s left after Release: %v", lockFile, err)
			}
			// What a kill -9 leaves: the file with a dead pid, no flock.
			os.MkdirAll(filepath.Dir(lockFile), 0o755)
			os.WriteFile(lockFile, []byte("999999999\nortq train\n"), 0o644)
			b, err := c.lock(out)
			if err != nil {
				t.Fatalf("stale lock file blocks: %v", err)
			}
			if got, _ := os.ReadFile(lockFile); !strings.HasPrefix(string(got), strconv.Itoa(os.Getpid())+"\n") {
				t.Errorf("lock file holds %q", got)
			}
			b.Release()
		})
	}
}

// TestLockDirRemovesWhatItCreated: a run that fails before writing leaves no empty --out.
func TestLockDirRemovesWhatItCreated(t *testing.T) {
	out := filepath.Join(t.TempDir(), "new")
	l, err := LockDir(out)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("empty output directory left: %v", err)
	}
}
