package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBadValues (issue 13 item 5): bad option values, from a flag, an ORTQ_* variable or
// the --config file, are refused with one line naming the flag and where the value came
// from, with a usage exit status, before anything is written.
func TestBadValues(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(cfg, []byte("lora-r: \"sixteen\"\n"), 0o644)
	cfgF := filepath.Join(dir, "frac.yaml")
	os.WriteFile(cfgF, []byte("micro-batch: 2.5\n"), 0o644)
	out := filepath.Join(dir, "out")
	trainArgs := []string{"train", "--artifacts", filepath.Join(dir, "art"), "--data", filepath.Join(dir, "d.txt"), "--tokenizer", "default", "--out", out}
	cases := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"dropout NaN", nil, []string{"prepare", "--out", out, "--lora-dropout", "NaN"}, []string{"--lora-dropout", "finite"}},
		{"dropout Inf", nil, []string{"prepare", "--out", out, "--lora-dropout", "+Inf"}, []string{"--lora-dropout", "finite"}},
		{"env lora-r", []string{"ORTQ_LORA_R", "abc"}, []string{"prepare", "--out", out}, []string{"ORTQ_LORA_R", "--lora-r", "abc", "integer"}},
		{"config lora-r", nil, []string{"prepare", "--out", out, "--config", cfg}, []string{cfg, "lora-r", "sixteen"}},
		{"config fraction", nil, append([]string{"--config", cfgF}, trainArgs...), []string{cfgF, "micro-batch", "2.5"}},
		{"max-steps", nil, append(trainArgs, "--max-steps", "-5"), []string{"--max-steps -5", "≥ 0"}},
		{"max-seq-len", nil, append(trainArgs, "--max-seq-len", "0"), []string{"--max-seq-len 0", "≥ 1"}},
		{"epochs NaN", nil, append(trainArgs, "--epochs", "NaN"), []string{"--epochs", "finite"}},
		{"epochs 0", nil, append(trainArgs, "--epochs", "0"), []string{"--epochs 0", "> 0"}},
		{"micro-batch", nil, append(trainArgs, "--micro-batch", "0"), []string{"--micro-batch 0"}},
		{"max-grad-norm negative", nil, append(trainArgs, "--max-grad-norm", "-1"), []string{"--max-grad-norm -1", "≥ 0"}},
		{"max-grad-norm Inf", nil, append(trainArgs, "--max-grad-norm", "Inf"), []string{"--max-grad-norm", "finite"}},
		{"env epochs", []string{"ORTQ_EPOCHS", "NaN"}, trainArgs, []string{"ORTQ_EPOCHS", "--epochs"}},
		{"train-on", nil, append(trainArgs, "--train-on", "prompt"), []string{"--train-on \"prompt\"", "prompt+completion"}},
		{"eval max-seq-len", nil, []string{"eval", "--artifacts", filepath.Join(dir, "art"), "--data", "x", "--tokenizer", "default", "--max-seq-len", "-1"},
			[]string{"--max-seq-len -1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.env != nil {
				t.Setenv(c.env[0], c.env[1])
			}
			err := run(t, c.args...)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not name %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("more than one line: %q", msg)
			}
			if exitCode(err) != 2 {
				t.Errorf("exit status %d, want 2 (usage)", exitCode(err))
			}
			if es, _ := os.ReadDir(dir); len(es) != 2 {
				t.Errorf("something was written: %v", es)
			}
		})
	}
}

// TestMemoryLimits (issue 13 item 4): a micro-batch whose CPU step cannot fit in the
// machine's memory (here a pretended 1 GiB, then 260 MiB) is refused before the first
// step, naming the flag and the largest value that could fit, which is then accepted;
// --data /dev/zero is refused at once naming the file.
func TestMemoryLimits(t *testing.T) {
	dir, args := relFixture(t, 1)
	defer func(f func() (uint64, error)) { hostMemory = f }(hostMemory)
	hostMemory = func() (uint64, error) { return 1 << 30, nil }
	out := filepath.Join(dir, "run")
	err := run(t, with(setFlag(args, "--micro-batch", "100000000"), "--out", out)...)
	m := regexp.MustCompile(`largest --micro-batch that could fit is (\d+)`).FindStringSubmatch(fmt.Sprint(err))
	if m == nil || !strings.Contains(err.Error(), "--micro-batch 100000000") {
		t.Fatalf("micro-batch 1e8: %v", err)
	}
	if exists(out) {
		t.Error("the refused run wrote its --out")
	}
	if err := run(t, with(setFlag(args, "--micro-batch", m[1]), "--out", out)...); err != nil {
		t.Fatalf("--micro-batch %s (named as fitting): %v", m[1], err)
	}
	hostMemory = func() (uint64, error) { return 260 << 20, nil }
	err = run(t, with(setFlag(args, "--max-seq-len", "512"), "--out", filepath.Join(dir, "run2"))...)
	if err == nil || !regexp.MustCompile(`largest --max-seq-len that could is \d+`).MatchString(err.Error()) {
		t.Fatalf("max-seq-len: %v", err)
	}
	err = run(t, with(setFlag(args, "--data", "/dev/zero"), "--out", filepath.Join(dir, "run3"))...)
	if err == nil || !strings.Contains(err.Error(), "/dev/zero") || !strings.Contains(err.Error(), "NUL") {
		t.Fatalf("/dev/zero: %v", err)
	}
}
