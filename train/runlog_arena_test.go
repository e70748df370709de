package train_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/train"
)

// TestRunLogArena: every run.jsonl line carries ONNX Runtime's arena figures of the training
// session beside the host and GPU figures (here the CPU arena), peak ≥ in use > 0.
func TestRunLogArena(t *testing.T) {
	art, trainSet, evalSet := loopFixture(t)
	out := filepath.Join(t.TempDir(), "run")
	cfg := loopConfig(art, out)
	cfg.LogEvery, cfg.MaxSteps, cfg.SaveEvery = 1, 2, 0
	if _, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfg); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(out, "run.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := 0
	for s := bufio.NewScanner(f); s.Scan(); lines++ {
		var r train.MemRecord
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if a := r.Arena; a == nil || a.PeakInUse <= 0 || a.PeakInUse < a.InUse {
			t.Errorf("line %d (%s, step %d): arena figures %+v", lines+1, r.Event, r.Step, a)
		}
	}
	if lines < 3 {
		t.Errorf("run.jsonl has %d lines, want start + 2 steps", lines)
	}
}
