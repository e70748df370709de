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
// backward pass read them). With seqMajor the inputs are [1, 5, heads, 8] as the Linears
// write them: q and k transposed and rotated (RotaryEmbedding), v transposed, and o
// transposed back to [1, 5, 4, 8], as in ortq's graphs.
func groupedAttention(probsOut, seqMajor bool) *ortgraph.Graph {
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}},
		Graph: &onnxpb.GraphProto{Name: "attention"}}, Dir: "."}
	g := ortgraph.NewGraph(m)
	in := func(name string, dims ...int64) string {
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: name, Type: ortgraph.TensorType(ortgraph.Float, dims)})
		return name
	}
	q, k, v, mask := in("q", 1, 4, 5, 8), in("k", 1, 2, 5, 8), in("v", 1, 2, 5, 8), in("mask", 1, 1, 5, 5)
	if seqMajor {
		g.P.Input = nil
		q, k, v, mask = in("q", 1, 5, 4, 8), in("k", 1, 5, 2, 8), in("v", 1, 5, 2, 8), in("mask", 1, 1, 5, 5)
	}
	g.Reindex()
	if seqMajor {
		cos, sin := make([]float32, 5*4), make([]float32, 5*4)
		for i := range cos {
			a := float64(i/4) / math.Pow(100, float64(i%4)/4)
			cos[i], sin[i] = float32(math.Cos(a)), float32(math.Sin(a))
		}
		cc := g.AddInitializer(ortgraph.FloatTensor("cos", ortgraph.Float, []int64{5, 4}, cos))
		sc := g.AddInitializer(ortgraph.FloatTensor("sin", ortgraph.Float, []int64{5, 4}, sin))
		pos := g.AddInitializer(ortgraph.Int64Tensor("pos", []int64{1, 5}, []int64{0, 1, 2, 3, 4}))
		typed := func(v string, heads int64) string { // the head-major type shape inference gives ortq's graphs
			g.SetType(v, ortgraph.TensorType(ortgraph.Float, []int64{1, heads, 5, 8}))
			return v
		}
		t := func(x string) string {
			return typed(g.Op("Transpose", []string{x}, ortgraph.AInts("perm", 0, 2, 1, 3)), g.Dims(x)[2])
		}
		rot := func(x string) string {
			return typed(g.Op("RotaryEmbedding", []string{t(x), cc, sc, pos}), g.Dims(x)[2])
		}
		q, k, v = rot(q), rot(k), t(v)
		g.M.SetOpset("", 23)
	}
	kt := g.Op("Transpose", []string{k}, ortgraph.AInts("perm", 0, 1, 3, 2))
	s := g.Op("MatMul", []string{g.Op("Reshape", []string{q, g.ConstI64(0, 2, -1, 0)}), kt})
	s = g.Op("Reshape", []string{g.Op("Mul", []string{s, g.ConstF(ortgraph.Float, 0.35)}), g.ConstI64(0, 4, -1, 0)})
	p := g.Op("Softmax", []string{g.Op("Add", []string{s, mask})}, ortgraph.AInt("axis", -1))
	o := g.Op("MatMul", []string{g.Op("Reshape", []string{p, g.ConstI64(0, 2, -1, 0)}), v})
	o = g.Op("Reshape", []string{o, g.ConstI64(0, 4, -1, 0)})
	g.P.Output = []*onnxpb.ValueInfoProto{{Name: o, Type: ortgraph.TensorType(ortgraph.Float, []int64{1, 4, 5, 8})}}
	if seqMajor {
		o = g.Op("Transpose", []string{o}, ortgraph.AInts("perm", 0, 2, 1, 3))
		g.P.Output = []*onnxpb.ValueInfoProto{{Name: o, Type: ortgraph.TensorType(ortgraph.Float, []int64{1, 5, 4, 8})}}
	}
	if probsOut {
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: p, Type: ortgraph.TensorType(ortgraph.Float, []int64{1, 4, 5, 5})})
	}
	return g
}

// TestAttentionForwardGolden keeps the grouped attention as one Attention node, or one
// MultiHeadAttention node (and the attention whose probabilities are read elsewhere left,
// with the reason; and, with seq-major inputs and output, without the transposes around the
// rotary embeddings and the output), and checks that
// ONNX Runtime's output of the rewritten graph equals the decomposed one's.
func TestAttentionForwardGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name     string
		pass     *ortgraph.Pass
		probsOut bool
		seqMajor bool
		fused    int
	}{
		{"grouped attention", passes.AttentionForward, false, false, 1},
		{"probabilities read elsewhere", passes.AttentionForward, true, false, 0},
		{"grouped attention, MultiHeadAttention", passes.AttentionForwardMHA, false, false, 1},
		{"seq-major inputs, rotary, MultiHeadAttention", passes.AttentionForwardMHA, false, true, 1},
	} {
		g := groupedAttention(c.probsOut, c.seqMajor)
		out.WriteString(fusionGolden(t, c.name, g, c.pass, c.fused, 1e-5, func(t *testing.T, m []byte) []float32 { return attentionOutput(t, m, c.seqMajor) }))
		if n := countOp(g, "Transpose"); c.seqMajor && n != 0 {
			t.Errorf("%s: %d Transpose nodes left, want 0", c.name, n)
		}
	}
	golden(t, "attentionforward.txt", out.String())
}

// countOp is the number of op nodes in g.
func countOp(g *ortgraph.Graph, op string) int {
	n := 0
	for _, node := range g.P.Node {
		if node.OpType == op {
			n++
		}
	}
	return n
}

// attentionOutput runs groupedAttention's serialized graph (its seq-major form with
// seqMajor) on fixed random q, k, v and a causal mask and returns o.
func attentionOutput(t *testing.T, model []byte, seqMajor bool) []float32 {
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
	q, k, v := rnd(1, 4, 5, 8), rnd(1, 2, 5, 8), rnd(1, 2, 5, 8)
	if seqMajor {
		q.Shape, k.Shape, v.Shape = []int64{1, 5, 4, 8}, []int64{1, 5, 2, 8}, []int64{1, 5, 2, 8}
	}
	res, err := s.Run(map[string]*ortrun.Tensor{"q": q, "k": k, "v": v,
		"mask": {DType: ortrun.Float32, Shape: []int64{1, 1, 5, 5}, Data: mask}}, []string{s.OutputNames()[0]})
	if err != nil {
		t.Fatal(err)
	}
	return res[s.OutputNames()[0]].Data.([]float32)
}
