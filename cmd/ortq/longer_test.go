package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTrainLonger: `ortq train --resume latest --max-steps 4` after a finished 2-step run
// trains to step 4, says the schedule changed, and (constant schedule) ends exactly where a
// straight 4-step run ends; the report and report.md carry the gradient norms, clipped at
// the default --max-grad-norm 1.
func TestTrainLonger(t *testing.T) {
	dir, args := relFixture(t, 2)
	args = setFlag(args, "--schedule", "constant")
	straight, longer := filepath.Join(dir, "straight"), filepath.Join(dir, "longer")
	if err := run(t, with(setFlag(args, "--max-steps", "4"), "--out", straight)...); err != nil {
		t.Fatal(err)
	}
	if err := run(t, with(args, "--out", longer)...); err != nil {
		t.Fatal(err)
	}
	if err := run(t, with(setFlag(args, "--max-steps", "4"), "--out", longer, "--resume", "latest")...); err != nil {
		t.Fatal(err)
	}
	sameRun(t, readFinal(t, straight), readFinal(t, longer))
	rep := readReport(t, longer)
	if rep.OptimizerSteps != 4 || !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "total steps changed from 2 to 4") }) {
		t.Errorf("%d optimizer steps, notes %q", rep.OptimizerSteps, rep.Notes)
	}
	if g := rep.GradNorm; g == nil || g.Steps != 4 || g.MaxGradNorm != 1 || g.Clipped == 0 {
		t.Errorf("report gradient norms %+v, want 4 steps, some clipped at 1", g)
	}
	md, err := os.ReadFile(filepath.Join(longer, "report.md"))
	if err != nil || !strings.Contains(string(md), "| gradient norm last / mean / max |") {
		t.Errorf("report.md lacks the gradient norms (%v)", err)
	}
	// Back to fewer steps than the checkpoint holds: refused, naming the options.
	err = run(t, with(setFlag(args, "--max-steps", "3"), "--out", longer, "--resume", "latest")...)
	if err == nil || !strings.Contains(err.Error(), "--max-steps") {
		t.Errorf("resume at step 4 to 3 steps: %v", err)
	}
}
