package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestNF4Trains prepares the default model with an NF4 base (bitsandbytes' layout, block
// 64) with and without double quantization, records the type in the manifest, and trains it
// briefly on the CPU — the host step with per-layer recomputation and the device step — with
// the eval perplexity falling.
func TestNF4Trains(t *testing.T) {
	ortruntest.Lib(t)
	data := demoData(t)
	for _, c := range []struct {
		name  string
		flags []string
		step  []string
	}{
		{"nf4", []string{"--quant", "nf4"}, []string{"--step", "host", "--recompute", "layer"}},
		{"nf4-double-quant", []string{"--quant", "nf4", "--double-quant"}, []string{"--step", "device"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			art, out := filepath.Join(dir, "art"), filepath.Join(dir, "run")
			args := append([]string{"prepare", "--out", art, "--quiet", "--block-size", "64"}, c.flags...)
			if err := run(t, args...); err != nil {
				t.Fatal(err)
			}
			man, err := manifest.ReadManifest(art)
			if err != nil {
				t.Fatal(err)
			}
			if man.QuantType != "nf4" || man.QuantBlockSize != 64 || man.QuantDoubleQuant != strings.Contains(c.name, "double") {
				t.Errorf("manifest quant_type %q, block %d, double quant %v", man.QuantType, man.QuantBlockSize, man.QuantDoubleQuant)
			}
			args = append([]string{"train", "--artifacts", art, "--data", data, "--tokenizer", "default", "--max-steps", "12",
				"--max-seq-len", "128", "--micro-batch", "4", "--lr", "2e-3", "--max-eval-batches", "4", "--quiet", "--out", out, "--device", "cpu"}, c.step...)
			if err := run(t, args...); err != nil {
				t.Fatal(err)
			}
			rep := readReport(t, out)
			before, after := float64(rep.Baseline.Perplexity), float64(rep.Final.Perplexity)
			t.Logf("%s: perplexity %.2f → %.2f after %d steps", c.name, before, after, rep.OptimizerSteps)
			if !(after < 0.95*before) {
				t.Errorf("perplexity %.2f → %.2f: less than a 5 %% drop", before, after)
			}
		})
	}
}

// TestQuantFlagsRefused: bad --quant values and combinations are refused naming the flags.
func TestQuantFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--quant", "nf5"}, `--quant "nf5"`},
		{[]string{"--double-quant"}, "--double-quant needs --quant nf4 or fp4"},
		{[]string{"--quant", "nf4", "--asymmetric"}, "--asymmetric with --quant nf4"},
		{[]string{"--quant", "fp4", "--bits", "16"}, "--quant fp4 needs --bits 4"},
	} {
		err := run(t, append([]string{"prepare", "--out", filepath.Join(dir, "o"), "--quiet"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
}
