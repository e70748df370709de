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
