package ortrun

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindLibrary(t *testing.T) {
	root := t.TempDir()
	lib := filepath.Join(root, ".ort", LibName)
	os.MkdirAll(filepath.Dir(lib), 0o755)
	os.WriteFile(lib, []byte("x"), 0o644)
	sub := filepath.Join(root, "a", "b")
	os.MkdirAll(sub, 0o755)
	home := t.TempDir()
	t.Setenv("HOME", home)

	t.Run("explicit wins", func(t *testing.T) {
		t.Setenv(EnvLib, filepath.Join(root, "nope"))
		got, err := FindLibrary(lib)
		if err != nil || got != lib {
			t.Fatalf("FindLibrary(%q) = %q, %v", lib, got, err)
		}
	})
	t.Run("explicit missing", func(t *testing.T) {
		_, err := FindLibrary(filepath.Join(root, "nope.so"))
		if !errors.Is(err, ErrLibraryNotFound) || !strings.Contains(err.Error(), "make ort") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv(EnvLib, lib)
		if got, err := FindLibrary(""); err != nil || got != lib {
			t.Fatalf("got %q, %v", got, err)
		}
		t.Setenv(EnvLib, filepath.Join(root, "missing.so"))
		if _, err := FindLibrary(""); err == nil || !strings.Contains(err.Error(), "$"+EnvLib) {
			t.Fatalf("missing $%s: %v", EnvLib, err)
		}
	})
	t.Run("repo .ort above cwd", func(t *testing.T) {
		t.Setenv(EnvLib, "")
		t.Chdir(sub)
		got, err := FindLibrary("")
		if err != nil {
			t.Fatal(err)
		}
		if g, _ := filepath.EvalSymlinks(got); g != mustEval(t, lib) {
			t.Fatalf("got %q, want %q", got, lib)
		}
	})
	t.Run("home ort", func(t *testing.T) {
		t.Setenv(EnvLib, "")
		t.Chdir(t.TempDir())
		hl := filepath.Join(home, "ort", LibName)
		os.MkdirAll(filepath.Dir(hl), 0o755)
		os.WriteFile(hl, []byte("x"), 0o644)
		defer os.Remove(hl)
		got, err := FindLibrary("")
		if err != nil || got != hl {
			if err == nil && strings.Contains(got, ".ort") {
				t.Skipf("a .ort/ above the test binary takes precedence here: %s", got)
			}
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("nothing", func(t *testing.T) {
		t.Setenv(EnvLib, "")
		t.Chdir(t.TempDir())
		got, err := FindLibrary("")
		if err == nil {
			t.Skipf("a library is installed where the executable lives: %s", got)
		}
		for _, want := range []string{"make ort", EnvLib, filepath.Join(home, "ort", LibName)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFloat16Conversion(t *testing.T) {
	for _, tc := range []struct {
		f    float32
		bits uint16
	}{
		{0, 0}, {float32(math.Copysign(0, -1)), 0x8000}, {1, 0x3c00}, {-2, 0xc000}, {0.1, 0x2e66},
		{65504, 0x7bff}, {65519, 0x7bff}, {65520, 0x7c00}, {1e10, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00}, {float32(math.Ldexp(1, -24)), 0x0001},
		{float32(math.Ldexp(1, -25)), 0}, {float32(math.Ldexp(1.5, -25)), 0x0001}, {float32(math.Ldexp(1, -14)), 0x0400},
		{1 + 1.0/2048, 0x3c00}, {1 + 3.0/2048, 0x3c02}, // ties to even
	} {
		if got := Float32ToFloat16(tc.f); got != tc.bits {
			t.Errorf("Float32ToFloat16(%g) = %#04x, want %#04x", tc.f, got, tc.bits)
		}
	}
	if h := Float32ToFloat16(float32(math.NaN())); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("NaN → %#04x", h)
	}
	// Every half survives float32 and back.
	for h := 0; h < 1<<16; h++ {
		f := Float16ToFloat32(uint16(h))
		if f != f {
			continue
		}
		if back := Float32ToFloat16(f); back != uint16(h) {
			t.Fatalf("%#04x → %g → %#04x", h, f, back)
		}
	}
}
