package prepare_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/quantize"
	"github.com/ortq/ortq/train"
)

// TestTorchScriptStyleGraph rewrites a stock export into the TorchScript/optimum layout —
// Linear weights stored [out, in] under their Hugging Face names and read through a
// Transpose node, no exporter metadata — and checks that prepare finds the Linears by name
// and that loss and gradients are unchanged, for the 16-bit and the 4-bit base.
func TestTorchScriptStyleGraph(t *testing.T) {
	ortruntest.Lib(t)
	c := refCases(t)[0]
	for _, rc := range refCases(t) {
		if rc.variant == "mask_untied" && rc.set == "all" {
			c = rc
		}
	}
	ref, m, g, linears := fixtureLinears(t, c.variant)
	src := m.Path
	for _, l := range linears {
		if l.WeightIsOutIn {
			continue
		}
		tt := g.Initializer(l.Weight)
		w, err := m.Floats(tt)
		if err != nil {
			t.Fatal(err)
		}
		in, out := int(l.In), int(l.Out)
		wt := quantize.Transpose(w, in, out)
		name := l.Module() + ".weight"
		g.RemoveInitializer(l.Weight)
		g.AddInitializer(ortgraph.FloatTensor(name, tt.DataType, []int64{l.Out, l.In}, wt))
		tr := g.Op("Transpose", []string{name}, ortgraph.AInts("perm", 1, 0))
		l.Node.Input[1] = tr
	}
	for _, n := range g.P.Node {
		n.MetadataProps = nil
	}
	if err := g.TopoSort(); err != nil {
		t.Fatal(err)
	}
	ts := filepath.Join(t.TempDir(), "torchscript.onnx")
	if _, err := m.Save(ts, "", 0); err != nil {
		t.Fatal(err)
	}
	step := func(model string, bits int) *train.StepResult {
		dir := prepareFor(t, model, c.targets, bits)
		eng, err := train.OpenEngineWith(dir, ortrun.Options{IntraOpThreads: 1}, train.EngineOptions{Train: true})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		if eng.Man.Model.FoundBy == "" {
			t.Fatal("manifest does not say how Linears were found")
		}
		t.Logf("%s, bits %d: Linears found by %s", filepath.Base(model), bits, eng.Man.Model.FoundBy)
		params := map[string][]float32{}
		for _, p := range eng.Man.Params {
			params[p.Name] = ref.tensor[p.Name]
		}
		r, err := eng.Step(ref.batch, params, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, bits := range []int{16, 4} {
		want, got := step(src, bits), step(ts, bits)
		if d := math.Abs(got.LossSum-want.LossSum) / want.LossSum; d > 1e-6 {
			t.Errorf("bits %d: loss sum %.6f vs %.6f", bits, got.LossSum, want.LossSum)
		}
		worst := 0.0
		for name, g := range want.Grads {
			worst = math.Max(worst, relErr(got.Grads[name], g))
		}
		if worst > 1e-5 {
			t.Errorf("bits %d: gradients differ by %.3g", bits, worst)
		}
	}
}
