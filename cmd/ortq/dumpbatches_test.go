package main

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/train"
)

// TestDumpBatchesFlag: `train --dump-batches FILE` writes the run line with the run's
// settings first, then evaluation batches, then per step its micro-batches and its loss —
// the losses the run's checkpoint records — and the evaluations; a resume with the flag is
// refused.
func TestDumpBatchesFlag(t *testing.T) {
	dir, args := relFixture(t, 2)
	out, dump := filepath.Join(dir, "run"), filepath.Join(dir, "dump.jsonl")
	args = append(args, "--out", out, "--dump-batches", dump)
	if err := run(t, args...); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dump)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[string]int{}
	var kinds []string
	var losses []float64
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var r struct {
			Kind      string
			Steps     int
			GradAccum int `json:"grad_accum"`
			Loss      float64
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Kind == "run" && (r.Steps != 2 || r.GradAccum != 2) {
			t.Errorf("run line: %s", sc.Text())
		}
		if r.Kind == "step" {
			losses = append(losses, r.Loss)
		}
		counts[r.Kind]++
		kinds = append(kinds, r.Kind)
	}
	if kinds[0] != "run" || counts["run"] != 1 || counts["eval_batch"] != 2 || counts["eval"] != 2 || counts["batch"] != 4 || counts["step"] != 2 {
		t.Errorf("kinds %v", kinds)
	}
	ck, err := train.LatestCheckpoint(filepath.Join(out, train.CheckpointsDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range ck.Losses {
		if i >= len(losses) || math.Float64bits(losses[i]) != math.Float64bits(float64(l)) {
			t.Errorf("step %d: checkpoint loss %v, dumped %v", i+1, l, losses)
		}
	}
	err = run(t, append(args, "--resume", "latest", "--max-steps", "3")...)
	if err == nil || !strings.Contains(err.Error(), "--dump-batches") {
		t.Errorf("resume with --dump-batches: %v", err)
	}
}
