package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
)

// TestDeviceMemoryLimits: on CUDA, a micro-batch whose activations cannot fit the GPU's free
// memory (weights already loaded) is refused before the first step, naming the flag and the
// largest value that fits — and that value is then accepted. Without a reading of the GPU
// (no NVML) nothing is refused.
func TestDeviceMemoryLimits(t *testing.T) {
	defer func(f func(string) (uint64, error)) { deviceFree = f }(deviceFree)
	llama3b := manifest.Model{Layers: 28, Hidden: 3072, Vocab: 128256}
	for _, c := range []struct {
		name                  string
		free                  uint64
		recompute             bool
		microBatch, rows, seq int
		want                  string // "" accepted
	}{
		{"fits", 4 << 30, true, 7, 7, 512, ""},
		{"micro-batch too large", 4 << 30, true, 64, 64, 512,
			`--micro-batch 64 with --max-seq-len 512 needs about .* GiB of GPU memory per step, more than cuda's free 4.0 GiB: the largest --micro-batch that ` +
				`could fit is (\d+)`},
		{"no recomputation", 4 << 30, false, 7, 7, 512, `the largest --micro-batch that could fit is (\d+)`},
		{"sequence too long", 64 << 20, true, 1, 1, 512, `even --micro-batch 1 does not fit; the largest --max-seq-len that could is \d+`},
		{"data holds fewer rows", 1 << 30, true, 64, 10, 512, `\(10 sequences, all the data holds\)`},
		{"no NVML reading", 0, true, 100000, 100000, 512, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			deviceFree = func(string) (uint64, error) { return c.free, nil }
			err := checkDeviceMemory("cuda", llama3b, c.recompute, c.microBatch, c.rows, c.seq)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			m := regexp.MustCompile(c.want).FindStringSubmatch(err.Error())
			if m == nil || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q does not match %q", err, c.want)
			}
			if len(m) > 1 {
				fit, _ := strconv.Atoi(m[1])
				if fit < 1 {
					t.Fatalf("named fit %d", fit)
				}
				if err := checkDeviceMemory("cuda", llama3b, c.recompute, fit, fit, c.seq); err != nil {
					t.Fatalf("--micro-batch %d, named as fitting, refused: %v", fit, err)
				}
			}
		})
	}
}
