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

// TestRecomputeAuto: --recompute auto takes the fastest policy whose estimated peak fits the
// budget, and layer when none does; the estimates reproduce the measured 3B figures.
func TestRecomputeAuto(t *testing.T) {
	m := &manifest.Manifest{TrainStep: &manifest.Graph{}, StepPolicies: map[string]*manifest.Graph{"selective": {}, "none": {}},
		Model:     manifest.Model{Layers: 28, Hidden: 3072, Vocab: 128256},
		DataFiles: []manifest.DataFile{{Size: 2_370_000_000}}}
	const gib = 1 << 30
	for _, c := range []struct {
		budget float64
		want   string
	}{{80 * gib, "none"}, {13.71 * gib, "selective"}, {6 * gib, "layer"}, {1 * gib, "layer"}} {
		if got := train.ChooseRecompute(m, c.budget, 7, 512); got.Policy != c.want {
			t.Errorf("budget %.2f GiB: %s, want %s", c.budget/gib, got, c.want)
		}
	}
	// Measured on an H100 (3B, micro-batch 7 × 512): layer 2.17 GiB of activations, none 14.82.
	for p, measured := range map[string]float64{"layer": 2.17, "none": 14.82} {
		if est := train.StepActivationBytes(m.Model, p, 7, 512) / gib; est < 0.85*measured || est > 1.15*measured {
			t.Errorf("%s: estimated %.2f GiB of activations, measured %.2f", p, est, measured)
		}
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
