package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func writeDir(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func leftovers(t *testing.T, parent string) []string {
	t.Helper()
	es, _ := os.ReadDir(parent)
	var out []string
	for _, e := range es {
		if e.Name() != "out" {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestReplaceDir: both ways (exchange and the two-rename fallback) leave the new
// directory and nothing else.
func TestReplaceDir(t *testing.T) {
	for _, noExchange := range []bool{false, true} {
		ReplaceNoExchange = noExchange
		parent := t.TempDir()
		dst := filepath.Join(parent, "out")
		writeDir(t, dst, "old")
		tmp, _ := os.MkdirTemp(parent, ".tmp-out-")
		writeDir(t, tmp, "new")
		if err := ReplaceDir(tmp, dst); err != nil {
			t.Fatal(err)
		}
		if c := content(t, dst); c != "new" {
			t.Errorf("noExchange=%v: %q", noExchange, c)
		}
		if l := leftovers(t, parent); len(l) > 0 {
			t.Errorf("noExchange=%v: left %v", noExchange, l)
		}
	}
	ReplaceNoExchange = false
}

// TestReplaceDirCrash: a crash after each step (the hook stops ReplaceDir there, as a
// kill would) leaves the old or the new directory at dst, or (fallback, between the
// renames) an old copy that RecoverReplaced puts back; RecoverReplaced then leaves no
// temporary or old directories.
func TestReplaceDirCrash(t *testing.T) {
	defer func() { ReplaceHook, ReplaceNoExchange = nil, false }()
	for _, c := range []struct {
		step       string
		noExchange bool
		want       string // at dst right after the crash ("" = missing)
		recovered  string
	}{
		{"exchanged", false, "new", "new"},
		{"moved-old", true, "", "old"},
	} {
		parent := t.TempDir()
		dst := filepath.Join(parent, "out")
		writeDir(t, dst, "old")
		tmp, _ := os.MkdirTemp(parent, ".tmp-out-")
		writeDir(t, tmp, "new")
		// Unrelated siblings that must survive the cleanup.
		os.MkdirAll(filepath.Join(parent, ".tmp-out-x-123"), 0o755)
		os.MkdirAll(filepath.Join(parent, "out.old-notdigits"), 0o755)
		ReplaceNoExchange = c.noExchange
		ReplaceHook = func(s string) {
			if s == c.step {
				panic("crash")
			}
		}
		func() {
			defer func() { recover() }()
			ReplaceDir(tmp, dst)
		}()
		ReplaceHook = nil
		_, err := os.Stat(dst)
		if c.want == "" {
			if !os.IsNotExist(err) {
				t.Errorf("%s: dst exists", c.step)
			}
		} else if got := content(t, dst); got != c.want {
			t.Errorf("%s: dst holds %q right after the crash", c.step, got)
		}
		if _, err := RecoverReplaced(dst); err != nil {
			t.Fatal(err)
		}
		if got := content(t, dst); got != c.recovered {
			t.Errorf("%s: recovered %q, want %q", c.step, got, c.recovered)
		}
		if l := leftovers(t, parent); len(l) != 2 {
			t.Errorf("%s: after recovery %v (want only the two unrelated siblings)", c.step, l)
		}
	}
}

func TestRemoveStaleTemps(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{".adapter_model.safetensors.tmp-123", ".report.json.tmp-9", "keep.tmp-1", ".x.tmp-abc", "adapter_model.safetensors"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	removed, err := RemoveStaleTemps(dir)
	if err != nil || len(removed) != 2 {
		t.Fatalf("removed %v, %v", removed, err)
	}
	if es, _ := os.ReadDir(dir); len(es) != 3 {
		t.Errorf("%d files left, want 3", len(es))
	}
}
