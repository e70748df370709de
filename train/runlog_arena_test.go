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
	recs := readRunLog(t, filepath.Join(out, "run.jsonl"))
	for i, r := range recs {
		if a := r.Arena; a == nil || a.PeakInUse <= 0 || a.PeakInUse < a.InUse {
			t.Errorf("line %d (%s, step %d): arena figures %+v", i+1, r.Event, r.Step, a)
		}
	}
	if len(recs) < 3 {
		t.Errorf("run.jsonl has %d lines, want start + 2 steps", len(recs))
	}
}

// readRunLog reads run.jsonl's records.
func readRunLog(t *testing.T, path string) []train.MemRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []train.MemRecord
	for s := bufio.NewScanner(f); s.Scan(); {
		var r train.MemRecord
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}
