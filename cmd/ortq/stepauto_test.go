package main

import (
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train"
)

// TestStepAuto: --step auto runs the CUDA-graph device step on one CUDA device when the
// artifacts have the step graph of the run's recomputation policy, and the host step
// otherwise, several devices included (the multi-device host step scaled best on two H200s).
func TestStepAuto(t *testing.T) {
	all := &manifest.Manifest{TrainStep: &manifest.Graph{File: manifest.TrainStepFile}, StepPolicies: map[string]*manifest.Graph{
		manifest.RecomputeSelective: {File: manifest.StepFile(manifest.RecomputeSelective)},
		manifest.RecomputeNone:      {File: manifest.StepFile(manifest.RecomputeNone)}}}
	layerOnly := &manifest.Manifest{TrainStep: &manifest.Graph{File: manifest.TrainStepFile}}
	without := &manifest.Manifest{}
	host := train.EngineOptions{Train: true}
	for _, c := range []struct {
		device, policy string
		man            *manifest.Manifest
		want           train.EngineOptions
	}{
		{"cuda", "layer", all, train.EngineOptions{DeviceStep: true, Policy: "layer", CUDAGraph: true, LazyEval: true}},
		{"cuda:1", "layer", all, train.EngineOptions{DeviceStep: true, Policy: "layer", CUDAGraph: true, LazyEval: true}},
		{"cuda", "none", all, train.EngineOptions{DeviceStep: true, Policy: "none", CUDAGraph: true, LazyEval: true}},
		{"cuda", "selective", all, train.EngineOptions{DeviceStep: true, Policy: "selective", CUDAGraph: true, LazyEval: true}},
		{"cuda", "none", layerOnly, train.EngineOptions{Train: true, LazyEval: true}},
		{"cuda", "layer", without, train.EngineOptions{Train: true, Recompute: true, LazyEval: true}},
		{"cpu", "layer", all, train.EngineOptions{Train: true, Recompute: true}},
		{"cpu", "none", all, host},
	} {
		got, err := stepOptions("auto", []string{c.device}, c.policy, c.man)
		if err != nil {
			t.Fatalf("%s recompute=%s: %v", c.device, c.policy, err)
		}
		if got != c.want {
			t.Errorf("%s recompute=%s: %+v, want %+v", c.device, c.policy, got, c.want)
		}
	}
	if _, err := stepOptions("host", []string{"cuda"}, "selective", all); err == nil || !strings.Contains(err.Error(), "device step") {
		t.Errorf("--step host --recompute selective: %v, want a refusal naming the device step", err)
	}
	for _, devs := range [][]string{{"cuda:0", "cuda:1"}, {"cpu", "cpu"}} {
		got, err := stepOptions("auto", devs, "layer", all)
		if err != nil {
			t.Fatal(err)
		}
		if got.DeviceStep || !got.Train || !got.Recompute {
			t.Errorf("%v: %+v, want the host step with recomputation", devs, got)
		}
	}
	got, err := stepOptions("graph", []string{"cuda:0", "cuda:1"}, "layer", all)
	if err != nil || !got.DeviceStep || !got.CUDAGraph {
		t.Errorf("explicit --step graph over two GPUs: %+v, %v", got, err)
	}
}

// TestRecomputeAuto: --recompute auto (with --base auto, 4bit) takes the fastest device
// step whose estimated peak fits the budget, and layer when none does; the estimates
// reproduce the measured 3B figures.
func TestRecomputeAuto(t *testing.T) {
	steps := map[string]*manifest.Graph{}
	for _, k := range train.StepKeys(train.BaseAuto) {
		if k != manifest.RecomputeLayer {
			steps[k] = &manifest.Graph{}
		}
	}
	m := &manifest.Manifest{TrainStep: &manifest.Graph{}, StepPolicies: steps,
		Model:     manifest.Model{Layers: 28, Hidden: 3072, Vocab: 128256},
		DataFiles: []manifest.DataFile{{Size: 2_370_000_000}}}
	for range 28 { // the Llama-3.2-3B shape's Linears, [out, in]
		for _, s := range [][2]int{{3072, 3072}, {1024, 3072}, {1024, 3072}, {3072, 3072}, {8192, 3072}, {8192, 3072}, {3072, 8192}} {
			m.Quant = append(m.Quant, manifest.QuantLayer{Shape: s})
		}
	}
	const gib = 1 << 30
	for _, c := range []struct {
		budget float64
		base   string
		want   string
	}{
		{80 * gib, train.BaseAuto, "none_dense"}, {13.71 * gib, train.BaseAuto, "selective_dense"},
		{13.71 * gib, train.BaseFourBit, "selective"}, {20 * gib, train.BaseDense, "selective_dense"},
		{6 * gib, train.BaseAuto, "layer"}, {1 * gib, train.BaseAuto, "layer"}, {1 * gib, train.BaseDense, "layer_dense"},
	} {
		if got := train.ChooseRecompute(m, c.budget, 7, 512, train.StepKeys(c.base)); got.Policy != c.want {
			t.Errorf("budget %.2f GiB, base %s: %s, want %s", c.budget/gib, c.base, got, c.want)
		}
	}
	// Measured on an H100 (3B, micro-batch 7 × 512): activations layer 2.17 GiB, selective
	// 6.63, none 17.37; a dense base 3.9 GiB more weights.
	for p, measured := range map[string]float64{"layer": 2.17, "selective": 6.63, "none": 17.37} {
		if est := train.StepActivationBytes(m.Model, p, 7, 512) / gib; est < 0.85*measured || est > 1.15*measured {
			t.Errorf("%s: estimated %.2f GiB of activations, measured %.2f", p, est, measured)
		}
	}
	if d := m.DenseExtraBytes() / gib; d < 3.5 || d > 4.2 {
		t.Errorf("dense base: %.2f GiB more estimated", d)
	}
	for _, v := range []string{"abc", "-1GiB", "0"} {
		if _, err := maxGPUMemory(v); err == nil {
			t.Errorf("--max-gpu-memory %q accepted", v)
		}
	}
	if b, err := maxGPUMemory("13.71GiB"); err != nil || b < 13.7*gib || b > 13.72*gib {
		t.Errorf("--max-gpu-memory 13.71GiB = %g, %v", b, err)
	}
}
