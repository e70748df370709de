package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/train"
)

// TestUnwritableOutEarly (issue 13 item 9): an --out that cannot be created is reported
// first, before the artifacts and data are read.
func TestUnwritableOutEarly(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	out := filepath.Join(file, "run")
	err := run(t, "train", "--artifacts", filepath.Join(dir, "noart"), "--data", filepath.Join(dir, "nodata.txt"), "--tokenizer", "default", "--out", out)
	if err == nil || !strings.Contains(err.Error(), out) {
		t.Errorf("error %v does not name --out %s", err, out)
	}
}

// TestDamagedOnlyCheckpointAdvice (issue 13 item 9): when every checkpoint is damaged,
// --resume latest says to start afresh with --force, and that works.
func TestDamagedOnlyCheckpointAdvice(t *testing.T) {
	dir, args := relFixture(t, 2)
	out := filepath.Join(dir, "run")
	if err := run(t, with(args, "--out", out, "--keep", "1")...); err != nil {
		t.Fatal(err)
	}
	dirs, _ := train.ListCheckpoints(filepath.Join(out, train.CheckpointsDir))
	for _, d := range dirs {
		es, _ := os.ReadDir(d)
		for _, e := range es {
			os.WriteFile(filepath.Join(d, e.Name()), []byte("damaged"), 0o644)
		}
	}
	err := run(t, with(args, "--out", out, "--resume", "latest")...)
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("resume over damaged checkpoints: %v", err)
	}
	if err := run(t, with(args, "--out", out, "--force")...); err != nil {
		t.Fatalf("the advice fails: %v", err)
	}
}

// TestNoCheckpointYetMessage (issue 13 item 9): a divergence before any checkpoint says so
// in words, not "the last good checkpoint is none written yet".
func TestNoCheckpointYetMessage(t *testing.T) {
	dir, args := relFixture(t, 4)
	err := run(t, with(setFlag(setFlag(args, "--lr", "1e30"), "--save-every", "0"), "--out", filepath.Join(dir, "run"))...)
	if err == nil || strings.Contains(err.Error(), "none written yet") || !strings.Contains(err.Error(), "no checkpoint was written yet") {
		t.Errorf("error: %v", err)
	}
}

// TestEarlySignal (issue 13 item 9): SIGINT while train is still loading is reported in
// one line with a non-zero status, and nothing is written.
func TestEarlySignal(t *testing.T) {
	dir, args := relFixture(t, 4)
	out := filepath.Join(dir, "run")
	cmd, log := child(t, []string{"ORTQ_TEST_EARLY_SIGINT=1"}, with(args, "--out", out)...)
	code := exitCodeOf(cmd.Wait())
	if code != 1 || !strings.Contains(log.String(), "interrupted before training started") {
		t.Errorf("exit %d:\n%s", code, log)
	}
	if exists(out) {
		t.Error("--out written")
	}
}
