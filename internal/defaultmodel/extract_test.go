package defaultmodel

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestConcurrentExtract (issue 26 #8): six extractions into one empty directory at once,
// over several rounds, all succeed and leave the embedded bytes (they once shared one
// temporary name, and 1 to 6 of 6 failed); a damaged file of the right size is rewritten.
func TestConcurrentExtract(t *testing.T) {
	want, _ := files.ReadFile("model.onnx")
	for round := 0; round < 10; round++ {
		dir := filepath.Join(t.TempDir(), "cache")
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, err := Extract(dir)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "model.onnx")); !bytes.Equal(got, want) {
			t.Fatalf("round %d: model.onnx differs from the embedded one", round)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 4 {
			t.Errorf("round %d: %d entries, want the 4 files and no temporaries", round, len(entries))
		}
	}
	dir := t.TempDir()
	if _, _, err := Extract(dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "model.onnx"), make([]byte, len(want)), 0o644)
	m, _, err := Extract(dir)
	if got, _ := os.ReadFile(m); err != nil || !bytes.Equal(got, want) {
		t.Errorf("a damaged model.onnx of the right size was kept (err %v)", err)
	}
}
