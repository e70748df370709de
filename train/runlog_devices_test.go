package train_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/train"
)

// TestRunLogPerDevice: with several GPUs (Config.GPUDevices) every run.jsonl line carries each
// device's sampled memory and, as its GPU figure, the busiest device's; the report gives each
// device's peak — every sample counted, logged or not — beside the busiest GPU's.
func TestRunLogPerDevice(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	cfg := fakeConfig(out)
	cfg.LogEvery, cfg.SaveEvery = 1, 0
	calls := map[string]uint64{}
	sampler := func(dev string, base uint64, peakAt uint64) func() (uint64, uint64, bool) {
		return func() (uint64, uint64, bool) {
			calls[dev]++
			if calls[dev] == peakAt {
				return base * 3, 1 << 40, true
			}
			return base + calls[dev], 1 << 40, true
		}
	}
	cfg.GPUDevices = []train.GPUSampler{
		{Device: "cuda:0", Sample: sampler("cuda:0", 1000, 3)},
		{Device: "cuda:1", Sample: sampler("cuda:1", 5000, 4)},
	}
	rep, err := runFake(context.Background(), newFakeBackend(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.PeakGPUBytes != 15000 {
		t.Errorf("report: peak GPU memory %d, want the busiest device's peak 15000", rep.PeakGPUBytes)
	}
	want := map[string]uint64{"cuda:0": 3000, "cuda:1": 15000}
	for d, w := range want {
		if rep.PeakGPUPerDevice[d] != w {
			t.Errorf("report: peak of %s %d, want %d (all: %v)", d, rep.PeakGPUPerDevice[d], w, rep.PeakGPUPerDevice)
		}
	}
	recs := readRunLog(t, filepath.Join(out, "run.jsonl"))
	for i, r := range recs {
		if len(r.GPUPerDevice) != 2 || r.GPUPerDevice["cuda:0"] == 0 || r.GPUPerDevice["cuda:1"] == 0 {
			t.Errorf("line %d (%s, step %d): per-device memory %v", i+1, r.Event, r.Step, r.GPUPerDevice)
		}
		if busiest := max(r.GPUPerDevice["cuda:0"], r.GPUPerDevice["cuda:1"]); r.GPUUsed != busiest {
			t.Errorf("line %d (%s, step %d): GPU memory %d, want the busiest device's %d", i+1, r.Event, r.Step, r.GPUUsed, busiest)
		}
	}
	if len(recs) < 7 {
		t.Errorf("run.jsonl has %d lines, want start + 6 steps", len(recs))
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| peak GPU memory per device (sampled) | cuda:0 ") {
		t.Errorf("report.md has no per-device peak row:\n%s", md)
	}
}
