package main

import (
	"os"
	"strings"
	"testing"

	"github.com/ortq/ortq/internal/envconfig"
)

// TestEnvKnobs: `ortq env` prints every knob, the README lists every knob, and a bad value
// (or a knob's former ORTQ_ name) is refused by a command before it runs, naming the
// variable.
func TestEnvKnobs(t *testing.T) {
	out, err := runOut(t, "", "env")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range envconfig.Knobs {
		if !strings.Contains(out, k.Name) {
			t.Errorf("ortq env does not print %s:\n%s", k.Name, out)
		}
		if !strings.Contains(string(readme), "| `"+k.Name+"` |") {
			t.Errorf("README's knob table lacks %s", k.Name)
		}
	}
	for _, c := range []struct{ name, value, want string }{
		{"ORTQX_SHARE_WEIGHTS", "banana", `ORTQX_SHARE_WEIGHTS="banana"`},
		{"ORTQX_ARENA_MAX_DEAD_BYTES", "-5", "ORTQX_ARENA_MAX_DEAD_BYTES"},
		{"ORTQ_DIRECT_COPY", "0", "ORTQ_DIRECT_COPY is now named ORTQX_DIRECT_COPY"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(c.name, c.value)
			err := run(t, "tokenize", "--tokenizer", "default", "x")
			if err == nil || !strings.Contains(err.Error(), c.want) || exitCode(err) != 2 {
				t.Errorf("%s=%s: error %v (exit %d), want a usage error naming it", c.name, c.value, err, exitCode(err))
			}
			if _, err := runOut(t, "", "env"); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ortq env with %s=%s: error %v", c.name, c.value, err)
			}
		})
	}
}

// TestWeightDecayRefused: a negative --weight-decay is refused before anything runs, naming
// where it came from (issue 26: ORTQ_WEIGHT_DECAY=-5 was refused without naming the variable).
func TestWeightDecayRefused(t *testing.T) {
	args := []string{"train", "--artifacts", t.TempDir(), "--data", "x.txt", "--tokenizer", "default"}
	err := run(t, append(args, "--weight-decay", "-5")...)
	if err == nil || !strings.Contains(err.Error(), `--weight-decay = "-5": must be ≥ 0`) || exitCode(err) != 2 {
		t.Errorf("--weight-decay -5: %v", err)
	}
	t.Setenv("ORTQ_WEIGHT_DECAY", "-5")
	err = run(t, args...)
	if err == nil || !strings.Contains(err.Error(), `ORTQ_WEIGHT_DECAY (for --weight-decay) = "-5": must be ≥ 0`) {
		t.Errorf("ORTQ_WEIGHT_DECAY=-5: %v", err)
	}
}
