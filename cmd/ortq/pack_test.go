package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackAndEvalSettings: the run records its data settings in report.json and eval reads
// them from there (an explicit flag still wins); isolated packing is refused in one line on
// artifacts without document ids; contradictory or empty eval settings are refused.
func TestPackAndEvalSettings(t *testing.T) {
	dir, args := relFixture(t, 1)
	out := filepath.Join(dir, "run")
	if err := run(t, with(setFlag(args, "--max-eval-batches", "0"), "--out", out, "--pack", "concat")...); err != nil {
		t.Fatal(err)
	}
	rep := readReport(t, out)
	cfg, _ := rep.Config.(map[string]any)
	d, _ := cfg["data"].(map[string]any)
	if d["pack"] != "concat" || d["max_seq_len"] != float64(64) {
		t.Fatalf("report.json config.data = %v", cfg["data"])
	}
	art, tok := args[2], args[6]
	adapter := filepath.Join(out, "adapter_model.safetensors")
	if err := run(t, "eval", "--artifacts", art, "--tokenizer", tok, "--adapter", adapter, "--threads", "1"); err != nil {
		t.Fatalf("eval with the run's settings: %v", err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"eval", "--artifacts", art, "--tokenizer", tok, "--data", args[4], "--eval-fraction", "0"}, "--eval-fraction 0 holds nothing out"},
		{with(args, "--out", filepath.Join(dir, "r2"), "--eval-fraction", "1"), "--eval-fraction 1 holds every example out"},
		{with(args, "--out", filepath.Join(dir, "r3"), "--no-pack", "--pack", "isolated"), "contradict"},
		{with(args, "--out", filepath.Join(dir, "r4"), "--pack", "sideways"), "--pack \"sideways\""},
	} {
		if err := run(t, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args[len(c.args)-2:], err, c.want)
		}
	}
	man := filepath.Join(art, "manifest.json")
	b, _ := os.ReadFile(man)
	os.WriteFile(man, []byte(strings.Replace(string(b), `"attention_mask": "document_ids",`, "", 1)), 0o644)
	err := run(t, with(args, "--out", filepath.Join(dir, "r5"))...)
	if err == nil || !strings.Contains(err.Error(), "re-run `ortq prepare --force`, or pass --pack concat") {
		t.Errorf("isolated packing on artifacts without document ids: %v", err)
	}
}
