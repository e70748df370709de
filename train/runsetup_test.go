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
