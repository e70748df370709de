package main

import (
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train"
)

// TestStepAuto: --step auto runs the CUDA-graph device step on CUDA with per-layer
// recomputation and artifacts that have the step graph, and the host step otherwise.
func TestStepAuto(t *testing.T) {
	withStep := &manifest.Manifest{TrainStep: &manifest.Graph{File: manifest.TrainStepFile}}
	without := &manifest.Manifest{}
	host := train.EngineOptions{Train: true}
	for _, c := range []struct {
		device    string
		recompute bool
		man       *manifest.Manifest
		want      train.EngineOptions
	}{
		{"cuda", true, withStep, train.EngineOptions{DeviceStep: true, CUDAGraph: true, LazyEval: true}},
		{"cuda:1", true, withStep, train.EngineOptions{DeviceStep: true, CUDAGraph: true, LazyEval: true}},
		{"cuda", false, withStep, train.EngineOptions{Train: true, LazyEval: true}},
		{"cuda", true, without, train.EngineOptions{Train: true, Recompute: true, LazyEval: true}},
		{"cpu", true, withStep, train.EngineOptions{Train: true, Recompute: true}},
		{"cpu", false, withStep, host},
	} {
		got, err := engineOptions("auto", c.device, c.recompute, c.man)
		if err != nil {
			t.Fatalf("%s recompute=%v: %v", c.device, c.recompute, err)
		}
		if got != c.want {
			t.Errorf("%s recompute=%v step graph=%v: %+v, want %+v", c.device, c.recompute, c.man.TrainStep != nil, got, c.want)
		}
	}
}
