package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// FuzzOptionValues feeds arbitrary values for an option through the --config file and
// the ORTQ_* variable of `ortq train`'s flags: options must never panic, and whatever it
// accepts parses as its flag's type (floats finite), so no value silently becomes zero.
func FuzzOptionValues(f *testing.F) {
	f.Add("lora-r", "16", "")
	f.Add("micro-batch", `"sixteen"`, "")
	f.Add("epochs", "NaN", "1")
	f.Add("lr", "1e400", "")
	f.Add("max-steps", "[1, 2]", "-5")
	f.Add("quiet", "yes", "maybe")
	f.Add("seed", "-1", "18446744073709551616")
	f.Fuzz(func(t *testing.T, key, yamlValue, envValue string) {
		if strings.ContainsAny(key, "\x00\n\r:=") || strings.ContainsRune(envValue, 0) {
			return
		}
		cmd := newTrain()
		if cmd.Flags().Lookup(key) == nil {
			return
		}
		cfg := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(cfg, []byte(key+": "+yamlValue+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		env := "ORTQ_" + strings.ToUpper(strings.ReplaceAll(key, "-", "_"))
		if envValue != "" {
			t.Setenv(env, envValue)
		}
		root := newRoot()
		root.AddCommand(cmd)
		if err := root.PersistentFlags().Set("config", cfg); err != nil {
			t.Fatal(err)
		}
		cmd.InheritedFlags() // merge the persistent --config into cmd's inherited set
		v, err := options(cmd)
		if err != nil {
			return
		}
		var bad string
		cmd.Flags().VisitAll(func(fl *pflag.Flag) {
			if fl.Name != key {
				return
			}
			switch fl.Value.Type() {
			case "float64":
				if x := v.GetFloat64(key); math.IsNaN(x) || math.IsInf(x, 0) {
					bad = "non-finite float accepted"
				}
			}
		})
		if bad != "" {
			t.Errorf("%s (yaml %q, env %q): %s", key, yamlValue, envValue, bad)
		}
	})
}

// TestFuzzHarnessReadsConfig: the harness's setup does reach the --config file.
func TestFuzzHarnessReadsConfig(t *testing.T) {
	cmd := newTrain()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("micro-batch: sixteen\n"), 0o644)
	root := newRoot()
	root.AddCommand(cmd)
	root.PersistentFlags().Set("config", cfg)
	cmd.InheritedFlags()
	if _, err := options(cmd); err == nil || !strings.Contains(err.Error(), "micro-batch") {
		t.Errorf("options: %v", err)
	}
}

// FuzzConfigFile feeds arbitrary YAML as the --config file of `ortq train` and `ortq
// prepare`: reading it must never panic, and a file it accepts gives every typed option a
// value that parses (checkValues ran on the merged sections).
func FuzzConfigFile(f *testing.F) {
	f.Add("max-steps: 3\ntrain:\n  lr: 0.001\nprepare:\n  lora-r: 4\n")
	f.Add("train: &a\n  seed: 1\neval: *a\n")
	f.Add("Max-Steps: 1\nmax-steps: 2\n")
	f.Add("<<: {seed: 1}\n")
	f.Add("train:\n  - 1\n")
	f.Add("[1, 2]")
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 4096 {
			return
		}
		for _, name := range []string{"train", "prepare"} {
			v, err := optionsFor(t, name, text)
			if err != nil {
				continue
			}
			if x := v.GetFloat64("lora-alpha"); math.IsNaN(x) || math.IsInf(x, 0) {
				t.Errorf("%s: non-finite lora-alpha accepted from %q", name, text)
			}
		}
	})
}
