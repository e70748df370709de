package passes_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// residualStream is two residual steps as a decoder writes them: h1 = x + a, y1 = norm(h1),
// h2 = h1 + b, y2 = norm(h2), all [2, 3, 8]; h2 and y1, y2 are outputs, and with
// invStdRead the second norm's inv_std_var is an output too (as the backward pass reads it).
func residualStream(invStdRead bool) *ortgraph.Graph {
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}},
		Graph: &onnxpb.GraphProto{Name: "residual"}}, Dir: "."}
	g := ortgraph.NewGraph(m)
	for _, in := range []string{"x", "a", "b"} {
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: in, Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 8})})
	}
	g.Reindex()
	w := make([]float32, 8)
	for i := range w {
		w[i] = 0.5 + float32(i)/8
	}
	wt := g.AddInitializer(ortgraph.FloatTensor("w", ortgraph.Float, []int64{8}, w))
	typ := ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 8})
	norm := func(h string) []string {
		g.SetType(h, typ)
		return g.Add(ortgraph.NodeSpec{Op: "SimplifiedLayerNormalization", Inputs: []string{h, wt}, NOut: 2,
			Attrs: []ortgraph.Attr{ortgraph.AInt("axis", -1), ortgraph.AFloat("epsilon", 1e-5)}})
	}
	h1 := g.Op("Add", []string{"x", "a"})
	y1 := norm(h1)
	h2 := g.Op("Add", []string{h1, "b"})
	y2 := norm(h2)
	for _, o := range []string{h2, y1[0], y2[0]} {
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: o, Type: typ})
	}
	if invStdRead {
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: y2[1], Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 1})})
	}
	return g
}

// TestResidualNormGolden: both residual norms become SkipSimplifiedLayerNormalization (the
// first writing h1 for the second Add), or only the first where the second's inv_std_var is
// read; ONNX Runtime's outputs of the rewritten graph equal the original's.
func TestResidualNormGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name       string
		invStdRead bool
		fused      int
	}{
		{"two residual norms", false, 2},
		{"the second norm's inv_std_var read", true, 1},
	} {
		out.WriteString(fusionGolden(t, c.name, residualStream(c.invStdRead), passes.ResidualNorm, c.fused, 1e-5, residualOutputs))
	}
	golden(t, "residualnorm.txt", out.String())
}

// residualOutputs runs residualStream's serialized graph on fixed random x, a, b and returns
// all its outputs, one after the other.
func residualOutputs(t *testing.T, model []byte) []float32 {
	r := rand.New(rand.NewPCG(6, 7))
	feeds := map[string]*ortrun.Tensor{}
	for _, in := range []string{"x", "a", "b"} {
		feeds[in] = randomFeed(r, []int64{2, 3, 8}, 1, false)
	}
	return allOutputs(t, model, feeds)
}
