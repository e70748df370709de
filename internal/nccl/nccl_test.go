package nccl

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// fakeLibs builds the stand-in NCCL and CUDA runtime of testdata/ with the C compiler cgo
// uses; extra are extra compiler flags of the NCCL one.
func fakeLibs(t *testing.T, extra ...string) (nccl, cudart string) {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%v) to build the fake NCCL", err)
	}
	dir := t.TempDir()
	nccl, cudart = filepath.Join(dir, "libnccl.so.2"), filepath.Join(dir, "libcudart.so.12")
	for _, b := range []struct {
		out, src string
		flags    []string
	}{{nccl, "testdata/fakenccl.c", extra}, {cudart, "testdata/fakecudart.c", nil}} {
		args := append([]string{"-shared", "-fPIC", "-o", b.out, b.src}, b.flags...)
		if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", cc, args, err, out)
		}
	}
	return nccl, cudart
}

func TestFindLibrary(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, LibName)
	if err := os.WriteFile(lib, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	for _, tc := range []struct {
		name, explicit, env, ldPath string
		want, wantErr               string
	}{
		{name: "flag", explicit: lib, env: "/nonexistent", want: lib},
		{name: "env", env: lib, want: lib},
		{name: "flag missing", explicit: filepath.Join(empty, LibName), wantErr: "from --nccl-lib) is not a file"},
		{name: "env is a directory", env: dir, wantErr: "from $ORTQ_NCCL_LIB) is not a file"},
		{name: "LD_LIBRARY_PATH", ldPath: empty + ":" + dir, want: lib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvLib, tc.env)
			t.Setenv("LD_LIBRARY_PATH", tc.ldPath)
			got, err := FindLibrary(tc.explicit)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrLibraryNotFound) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("FindLibrary = %q, %v; want a one-line error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FindLibrary = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestFindLibraryAbsent: with nothing anywhere the error names what to install.
func TestFindLibraryAbsent(t *testing.T) {
	home := t.TempDir()
	for _, k := range []string{EnvLib, "LD_LIBRARY_PATH", "VIRTUAL_ENV", "CONDA_PREFIX"} {
		t.Setenv(k, "")
	}
	t.Setenv("HOME", home)
	p, err := FindLibrary("")
	if err == nil {
		t.Skipf("this machine has NCCL at %s", p)
	}
	for _, want := range []string{"pip install nvidia-nccl-cu12", "--nccl-lib", EnvLib} {
		if !strings.Contains(err.Error(), want) || !errors.Is(err, ErrLibraryNotFound) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestOpenRefusals(t *testing.T) {
	notELF := filepath.Join(t.TempDir(), LibName)
	if err := os.WriteFile(notELF, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	partial, cudart := fakeLibs(t, "-DPARTIAL")
	full, _ := fakeLibs(t)
	for _, tc := range []struct {
		name, lib string
		cudart    []string
		want      string
	}{
		{"not a library", notELF, []string{cudart}, "dlopen " + notELF},
		{"missing symbol", partial, []string{cudart}, "missing symbol ncclGetUniqueId"},
		{"no CUDA runtime", full, []string{"libcudart-absent.so.99"}, "dlopen libcudart-absent.so.99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := open(tc.lib, tc.cudart)
			if err == nil {
				l.Close()
				t.Fatal("open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line containing %q", err, tc.want)
			}
		})
	}
}

func openFake(t *testing.T) *Lib {
	t.Helper()
	nccl, cudart := fakeLibs(t)
	l, err := open(nccl, []string{cudart})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if l.Version != 22703 {
		t.Fatalf("version %d", l.Version)
	}
	return l
}

func TestInitRankArguments(t *testing.T) {
	l := openFake(t)
	id, err := l.GetUniqueID()
	if err != nil || id[0] != 7 || id[127] != 7 {
		t.Fatalf("GetUniqueID = %v, %v", id[:4], err)
	}
	for _, tc := range []struct {
		name             string
		dev, rank, world int
		id               UniqueID
		want             string
	}{
		{"world 0", 0, 0, 0, id, "world size 0"},
		{"rank past world", 0, 2, 2, id, "rank 2 outside world size 2"},
		{"negative rank", 0, -1, 2, id, "rank -1"},
		{"negative device", -1, 0, 1, id, "CUDA device -1"},
		{"zero id", 0, 0, 1, UniqueID{}, "unique id is zero"},
		{"bad device", 9, 0, 1, id, "invalid device ordinal"},
		{"foreign id", 0, 0, 1, UniqueID{1}, "ncclCommInitRank (rank 0 of 1): fake error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := l.InitRank(tc.dev, tc.rank, tc.world, tc.id)
			if err == nil {
				c.Destroy()
				t.Fatal("InitRank succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want %q", err, tc.want)
			}
		})
	}
}

func TestAllReduceSum(t *testing.T) {
	l := openFake(t)
	id, _ := l.GetUniqueID()
	t.Setenv("FAKE_WORLD", "3")
	c, err := l.InitRank(0, 0, 1, id)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destroy()
	buf := []float32{1, -2, 0.5}
	if err := c.AllReduceSum(context.Background(), unsafe.Pointer(&buf[0]), len(buf), time.Second); err != nil {
		t.Fatal(err)
	}
	if buf[0] != 3 || buf[1] != -6 || buf[2] != 1.5 {
		t.Fatalf("sum %v, want [3 -6 1.5]", buf)
	}
	if err := c.AllReduceSum(context.Background(), nil, 3, time.Second); err == nil {
		t.Fatal("nil buffer accepted")
	}
	if err := c.AsyncError(); err != nil {
		t.Fatal(err)
	}
}

// TestAllReduceHang: a collective that never completes (a peer hangs) is aborted after the
// timeout; an asynchronous error (a peer died) ends it at once.
func TestAllReduceHang(t *testing.T) {
	l := openFake(t)
	id, _ := l.GetUniqueID()
	buf := []float32{1}
	for _, tc := range []struct {
		name, env, val string
		want           string
	}{
		{"hang", "FAKE_HANG", "1", "timed out after 50ms (rank 0 of 1)"},
		{"remote error", "FAKE_ASYNC", "6", "remote process exited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tc.env, tc.val)
			c, err := l.InitRank(0, 0, 1, id)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = c.AllReduceSum(context.Background(), unsafe.Pointer(&buf[0]), 1, 50*time.Millisecond)
			if err == nil || !strings.Contains(err.Error(), tc.want) || time.Since(start) > 2*time.Second {
				t.Fatalf("after %v: %v; want %q", time.Since(start), err, tc.want)
			}
			if err := c.AllReduceSum(context.Background(), unsafe.Pointer(&buf[0]), 1, 0); err == nil || !strings.Contains(err.Error(), "closed") {
				t.Fatalf("after the abort: %v", err)
			}
		})
	}
}
