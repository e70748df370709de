package prepare_test

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/quantize"
	"github.com/ortq/ortq/train"
)

// TestFourBitGradientsEqualDequantizedBase checks the 4-bit training graph (int4: forward
// and backward through DequantizeLinear over the 4-bit bytes; nf4, with and without double
// quantization: MatMulBnb4 forward, in-graph dequantization for dx) against a 16-bit graph
// whose Linear weights were replaced, in Go, by the dequantized 4-bit values: the two must
// give the same loss and LoRA gradients, with and without recomputation.
func TestFourBitGradientsEqualDequantizedBase(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range refCases(t) {
		if c.set != "all" {
			continue
		}
		for _, q := range []quantize.Options{{BlockSize: 32}, {Type: quantize.NF4, BlockSize: 32}, {Type: quantize.NF4, BlockSize: 32, DoubleQuant: true}} {
			if q.DoubleQuant && c.variant != "gqa_tied_llama3" {
				continue // one variant is enough for the absmax chain: keep the test short
			}
			t.Run(fmt.Sprintf("%s/%s/double=%v", c.variant, typeName(q.Type), q.DoubleQuant), func(t *testing.T) {
				fourBitVsDequantized(t, c, q)
			})
		}
	}
}

func typeName(t quantize.Type) string {
	if t == "" {
		return "int4"
	}
	return string(t)
}

// dequantized returns the weight [out, in] quantized with q and dequantized in Go.
func dequantized(t *testing.T, wt []float32, out, in int, q quantize.Options) []float32 {
	t.Helper()
	if q.Type.IsBnb4() {
		p, err := quantize.QuantizeBnb4(wt, out, in, q)
		if err != nil {
			t.Fatal(err)
		}
		return p.Dequantize()
	}
	p, err := quantize.Quantize(wt, out, in, q)
	if err != nil {
		t.Fatal(err)
	}
	return p.Dequantize()
}

// fixtureLinears loads fixture variant's model and PEFT reference and returns its Linears
// other than lm_head (FindLinears on the model's graph g).
func fixtureLinears(t *testing.T, variant string) (*reference, *ortgraph.Model, *ortgraph.Graph, []*passes.Linear) {
	t.Helper()
	ref := loadRef(t, filepath.Join(fixtures, variant, "ref_all.safetensors"))
	m, err := ortgraph.Load(filepath.Join(fixtures, variant, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	g := ortgraph.NewGraph(m)
	ctx, err := ortgraph.RunPasses(g, nil, nil, passes.FindLinears)
	if err != nil {
		t.Fatal(err)
	}
	var ls []*passes.Linear
	for _, l := range ortgraph.ResultOf[*passes.Linears](ctx, passes.FindLinears).All {
		if l.Kind != "lm_head" {
			ls = append(ls, l)
		}
	}
	return ref, m, g, ls
}

func fourBitVsDequantized(t *testing.T, c refCase, q quantize.Options) {
	ref, m, g, linears := fixtureLinears(t, c.variant)
	src := m.Path
	for _, l := range linears {
		tt := g.Initializer(l.Weight)
		w, err := m.Floats(tt)
		if err != nil {
			t.Fatal(err)
		}
		// The exporter stores [in, out]; quantization works on [out, in].
		in, out := int(l.In), int(l.Out)
		wt := quantize.Transpose(w, in, out)
		w = quantize.Transpose(dequantized(t, wt, out, in, q), out, in)
		*tt = *ortgraph.FloatTensor(tt.Name, tt.DataType, tt.Dims, w)
	}
	dqModel := filepath.Join(t.TempDir(), "dequantized.onnx")
	if _, err := m.Save(dqModel, "", 0); err != nil {
		t.Fatal(err)
	}
	step := func(model string, bits int, rec bool) *train.StepResult {
		dir := prepareQuant(t, model, c.targets, bits, q)
		eng, err := train.OpenEngineWith(dir, ortrun.Options{IntraOpThreads: 1}, train.EngineOptions{Train: true, Recompute: rec})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
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
	want := step(dqModel, 16, false)
	for _, rec := range []bool{false, true} {
		got := step(src, 4, rec)
		if d := math.Abs(got.LossSum-want.LossSum) / math.Abs(want.LossSum); d > 1e-5 {
			t.Errorf("recompute=%v: 4-bit loss sum %.6f, dequantized 16-bit %.6f", rec, got.LossSum, want.LossSum)
		}
		worst := 0.0
		for name, g := range want.Grads {
			worst = math.Max(worst, relErr(got.Grads[name], g))
		}
		t.Logf("%s recompute=%v: loss sum %.6f vs %.6f, worst gradient rel err %.2g", typeName(q.Type), rec, got.LossSum, want.LossSum, worst)
		if worst > 1e-4 {
			t.Errorf("recompute=%v: 4-bit gradients differ from the dequantized 16-bit graph's by %.3g > 1e-4", rec, worst)
		}
	}
}

// prepareQuant is prepareFor with the quantization options q.
func prepareQuant(t *testing.T, model string, targets []string, bits int, q quantize.Options) string {
	t.Helper()
	o := prepare.DefaultOptions()
	o.Model, o.Out, o.Targets, o.Bits, o.Dropout, o.LossChunks = model, filepath.Join(t.TempDir(), "art"), targets, bits, 0, 0
	if bits == 4 {
		o.BlockSize, o.Quant, o.DoubleQuant = q.BlockSize, string(q.Type), q.DoubleQuant
	}
	if _, err := prepare.Run(o, t.Logf); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	return o.Out
}
