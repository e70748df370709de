package main

import (
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/ortq/ortq/train"
)

// TestReportEpochs (issue 13 item 8): the report's epochs are the examples consumed over
// the training split's size (30 steps × 2 micro-batches × 2 sequences of the split).
func TestReportEpochs(t *testing.T) {
	dir, args := relFixture(t, 30)
	out := filepath.Join(dir, "run")
	if err := run(t, with(args, "--out", out)...); err != nil {
		t.Fatal(err)
	}
	rep := readReport(t, out)
	ck, err := train.LatestCheckpoint(filepath.Join(out, train.CheckpointsDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := trainExamples(t, args)
	want := float64(30*2*2) / float64(n)
	if ck.Data.Epoch != 0 || math.Abs(float64(rep.Epochs)-want) > 1e-9 {
		t.Errorf("epochs %v, want %d/%d = %v", rep.Epochs, 30*2*2, n, want)
	}
}

// trainExamples is the size of the training split train reports for args.
func trainExamples(t *testing.T, args []string) int {
	t.Helper()
	cmd, log := child(t, nil, with(setFlag(args, "--max-steps", "1"), "--out", filepath.Join(t.TempDir(), "n"))...)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v:\n%s", err, log)
	}
	m := regexp.MustCompile(`→ (\d+) train / \d+ eval examples`).FindStringSubmatch(log.String())
	if m == nil {
		t.Fatalf("no split size in:\n%s", log)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
