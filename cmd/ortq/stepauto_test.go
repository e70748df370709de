package main

import (
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train"
)

// TestStepAuto: --step auto runs the CUDA-graph device step on one CUDA device with per-layer
// recomputation and artifacts that have the step graph, and the host step otherwise,
// several devices included (the multi-device host step scaled best on two H200s).
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
	for _, devs := range [][]string{{"cuda:0", "cuda:1"}, {"cpu", "cpu"}} {
		got, err := devicesEngineOptions("auto", devs, true, withStep)
		if err != nil {
			t.Fatal(err)
		}
		if got.DeviceStep || !got.Train || !got.Recompute {
			t.Errorf("%v: %+v, want the host step with recomputation", devs, got)
		}
	}
	got, err := devicesEngineOptions("graph", []string{"cuda:0", "cuda:1"}, true, withStep)
	if err != nil || !got.DeviceStep || !got.CUDAGraph {
		t.Errorf("explicit --step graph over two GPUs: %+v, %v", got, err)
	}
}
