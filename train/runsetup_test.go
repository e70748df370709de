package train

import (
	"errors"
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
)

// TestChooseStep: explicit and auto steps over one and several devices, the fall-back of
// auto to the host step where the artifacts lack the policy's step graph, and the refusals.
func TestChooseStep(t *testing.T) {
	layer := &manifest.Manifest{TrainStep: &manifest.Graph{File: manifest.TrainStepFile}}
	for _, c := range []struct {
		step   string
		devs   []string
		policy string
		man    *manifest.Manifest
		want   EngineOptions
		err    string
	}{
		{"", []string{"cuda"}, "layer", layer, EngineOptions{DeviceStep: true, Policy: "layer", CUDAGraph: true, LazyEval: true}, ""},
		{"auto", []string{"cuda"}, "none", layer, EngineOptions{Train: true, LazyEval: true}, ""},
		{"auto", []string{"cuda:0", "cuda:1"}, "layer", layer, EngineOptions{Train: true, Recompute: true, LazyEval: true}, ""},
		{"auto", []string{"cpu"}, "layer", layer, EngineOptions{Train: true, Recompute: true}, ""},
		{"device", []string{"cpu", "cpu"}, "layer", layer, EngineOptions{DeviceStep: true, Policy: "layer"}, ""},
		{"graph", []string{"cuda"}, "none", layer, EngineOptions{}, "no device step graph for recompute none"},
		{"host", []string{"cuda"}, "selective", layer, EngineOptions{}, ErrHostSelective.Error()},
		{"fast", []string{"cuda"}, "layer", layer, EngineOptions{}, `step "fast": use host, device, graph or auto`},
	} {
		kind, err := ParseStepKind(c.step)
		var got EngineOptions
		if err == nil {
			got, err = ChooseStep(kind, c.devs, c.policy, c.man)
		}
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %v %s: error %v, want %q", c.step, c.devs, c.policy, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s %v %s: %+v, %v; want %+v", c.step, c.devs, c.policy, got, err, c.want)
		}
	}
	if _, err := ChooseStep(StepHost, []string{"cpu"}, "selective", layer); !errors.Is(err, ErrHostSelective) {
		t.Errorf("host selective: %v, want ErrHostSelective", err)
	}
}

// TestResolveRecompute: --recompute and --base on one GPU choose among the device steps the
// artifacts hold by estimated peak; several devices, the CPU and the host step keep the 4-bit
// base; --base dense is refused where no dense step can run, --recompute auto included.
func TestResolveRecompute(t *testing.T) {
	const gib = 1 << 30
	model := manifest.Model{Layers: 2, Hidden: 64, Vocab: 256}
	quant := []manifest.QuantLayer{{Shape: [2]int{4096, 4096}}}
	plain := &manifest.Manifest{Model: model, Quant: quant, TrainStep: &manifest.Graph{},
		StepPolicies: map[string]*manifest.Graph{"selective": {}, "none": {}}}
	dense := &manifest.Manifest{Model: model, Quant: quant, TrainStep: &manifest.Graph{}, StepPolicies: map[string]*manifest.Graph{}}
	for _, k := range StepKeys(BaseAuto) {
		if k != manifest.RecomputeLayer {
			dense.StepPolicies[k] = &manifest.Graph{}
		}
	}
	gpu, two := []string{"cuda"}, []string{"cuda:0", "cuda:1"}
	for _, c := range []struct {
		name, policy, base string
		man                *manifest.Manifest
		devs               []string
		step               StepKind
		budget             float64
		want, err          string
	}{
		{"auto picks none dense", "auto", BaseAuto, dense, gpu, StepGraph, 80 * gib, "none_dense", ""},
		{"layer, dense fits", "layer", BaseAuto, dense, gpu, StepGraph, 80 * gib, "layer_dense", ""},
		{"layer, 4bit asked", "layer", BaseFourBit, dense, gpu, StepGraph, 80 * gib, "layer", ""},
		{"old artifacts", "auto", BaseAuto, plain, gpu, StepGraph, 80 * gib, "none", ""},
		{"two GPUs", "auto", BaseAuto, dense, two, StepAuto, 80 * gib, "layer", ""},
		{"host step", "selective", BaseAuto, dense, gpu, StepHost, 80 * gib, "selective", ""},
		{"dense on old artifacts", "layer", BaseDense, plain, gpu, StepGraph, 80 * gib, "", "base dense"},
		{"dense auto on old artifacts", "auto", BaseDense, plain, gpu, StepGraph, 80 * gib, "", "base dense"},
		{"dense over two GPUs", "auto", BaseDense, dense, two, StepAuto, 80 * gib, "", "base dense"},
	} {
		got, _, err := ResolveRecompute(c.man, c.devs, c.policy, c.base, c.step, c.budget, func() uint64 { return 0 }, 7, 512)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %q, %v; want error %q", c.name, got, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}
