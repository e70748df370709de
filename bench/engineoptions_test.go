package bench

import (
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train"
)

// TestEngineOptions: each point's step and recomputation select the training graph, and the
// combinations the artifacts or the device step cannot serve are refused naming why.
func TestEngineOptions(t *testing.T) {
	const host, device, graph = train.StepHost, train.StepDevice, train.StepGraph
	withRec := &manifest.Manifest{TrainRecompute: &manifest.Graph{File: manifest.TrainRecomputeFile}, TrainStep: &manifest.Graph{File: manifest.TrainStepFile}}
	withPolicies := &manifest.Manifest{TrainRecompute: withRec.TrainRecompute, TrainStep: withRec.TrainStep,
		StepPolicies: map[string]*manifest.Graph{"selective": {File: manifest.StepFile("selective")}, "none": {File: manifest.StepFile("none")}}}
	for _, c := range []struct {
		name    string
		p       Params
		man     *manifest.Manifest
		want    train.EngineOptions
		wantErr string
	}{
		{"host", Params{Recompute: "none", Step: host}, &manifest.Manifest{}, train.EngineOptions{Train: true, LazyEval: true}, ""},
		{"host recompute", Params{Recompute: "layer", Step: host}, withRec, train.EngineOptions{Train: true, Recompute: true, LazyEval: true}, ""},
		{"device", Params{Recompute: "layer", Step: device}, withRec, train.EngineOptions{DeviceStep: true, Policy: "layer", LazyEval: true}, ""},
		{"graph", Params{Recompute: "layer", Step: graph}, withRec, train.EngineOptions{DeviceStep: true, Policy: "layer", CUDAGraph: true, LazyEval: true}, ""},
		{"graph selective", Params{Recompute: "selective", Step: graph}, withPolicies,
			train.EngineOptions{DeviceStep: true, Policy: "selective", CUDAGraph: true, LazyEval: true}, ""},
		{"host selective", Params{Recompute: "selective", Step: host}, withPolicies, train.EngineOptions{}, "exist only as device steps"},
		{"no recompute graph", Params{Recompute: "layer", Step: host}, &manifest.Manifest{}, train.EngineOptions{},
			"recompute layer is not supported by artifacts \"art\""},
		{"device without a none step", Params{Recompute: "none", Step: device}, withRec, train.EngineOptions{}, "no device step graph for recompute none"},
	} {
		got, err := engineOptions(c.p, []string{"cuda"}, "art", c.man)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: error %v, want %q", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}
