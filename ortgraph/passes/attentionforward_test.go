package passes_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// groupedAttention is the attention GroupedKV leaves, alone: q [1, 4, 5, 8] against k and v
// of 2 kv heads, scores scaled, an additive mask [1, 1, 5, 5], softmax, the product by v, as
// the graph output o; with probsOut the probabilities are a graph output too (as if the
// backward pass read them).
func groupedAttention(probsOut bool) *ortgraph.Graph {
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}},
		Graph: &onnxpb.GraphProto{Name: "attention"}}, Dir: "."}
	g := ortgraph.NewGraph(m)
	in := func(name string, dims ...int64) string {
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: name, Type: ortgraph.TensorType(ortgraph.Float, dims)})
		return name
	}
	q, k, v, mask := in("q", 1, 4, 5, 8), in("k", 1, 2, 5, 8), in("v", 1, 2, 5, 8), in("mask", 1, 1, 5, 5)
	g.Reindex()
	kt := g.Op("Transpose", []string{k}, ortgraph.AInts("perm", 0, 1, 3, 2))
	s := g.Op("MatMul", []string{g.Op("Reshape", []string{q, g.ConstI64(0, 2, -1, 0)}), kt})
	s = g.Op("Reshape", []string{g.Op("Mul", []string{s, g.ConstF(ortgraph.Float, 0.35)}), g.ConstI64(0, 4, -1, 0)})
	p := g.Op("Softmax", []string{g.Op("Add", []string{s, mask})}, ortgraph.AInt("axis", -1))
	o := g.Op("MatMul", []string{g.Op("Reshape", []string{p, g.ConstI64(0, 2, -1, 0)}), v})
	o = g.Op("Reshape", []string{o, g.ConstI64(0, 4, -1, 0)})
	g.P.Output = []*onnxpb.ValueInfoProto{{Name: o, Type: ortgraph.TensorType(ortgraph.Float, []int64{1, 4, 5, 8})}}
	if probsOut {
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: p, Type: ortgraph.TensorType(ortgraph.Float, []int64{1, 4, 5, 5})})
	}
	return g
}

// TestAttentionForwardGolden keeps the grouped attention as one Attention node, or one
// MultiHeadAttention node (and the attention whose probabilities are read elsewhere left,
// with the reason), and checks that
// ONNX Runtime's output of the rewritten graph equals the decomposed one's.
func TestAttentionForwardGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name     string
		pass     *ortgraph.Pass
		probsOut bool
		fused    int
	}{
		{"grouped attention", passes.AttentionForward, false, 1},
		{"probabilities read elsewhere", passes.AttentionForward, true, 0},
		{"grouped attention, MultiHeadAttention", passes.AttentionForwardMHA, false, 1},
	} {
		g := groupedAttention(c.probsOut)
		ctx, b, before := passRunFrom(t, c.name, g, nil, c.pass)
		if res := ortgraph.ResultOf[*passes.FusionResult](ctx, c.pass); res.Fused != c.fused {
			t.Errorf("%s: %d attentions rewritten, want %d", c.name, res.Fused, c.fused)
		}
		b.WriteString(ortgraph.Dump(g))
		out.WriteString(b.String())
		sameOutputs(t, c.name, before, g, 1e-5, attentionOutput)
	}
	golden(t, "attentionforward.txt", out.String())
}

// attentionOutput runs groupedAttention's serialized graph on fixed random q, k, v and a
// causal mask and returns o.
func attentionOutput(t *testing.T, model []byte) []float32 {
	t.Helper()
	s, err := ortrun.NewSessionFromBytes(model, ortrun.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := rand.New(rand.NewPCG(4, 5))
	rnd := func(dims ...int64) *ortrun.Tensor {
		v := make([]float32, ortgraph.NumElements(dims))
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return &ortrun.Tensor{DType: ortrun.Float32, Shape: dims, Data: v}
	}
	mask := make([]float32, 25)
	for i := range 5 {
		for j := i + 1; j < 5; j++ {
			mask[i*5+j] = float32(math.Inf(-1))
		}
	}
	res, err := s.Run(map[string]*ortrun.Tensor{"q": rnd(1, 4, 5, 8), "k": rnd(1, 2, 5, 8), "v": rnd(1, 2, 5, 8),
		"mask": {DType: ortrun.Float32, Shape: []int64{1, 1, 5, 5}, Data: mask}}, []string{s.OutputNames()[0]})
	if err != nil {
		t.Fatal(err)
	}
	return res[s.OutputNames()[0]].Data.([]float32)
}
