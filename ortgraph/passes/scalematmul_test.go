package passes_test

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// scaledGEMMs is y = 0.25·s read by GEMMs as attention's backward writes dS·scale: MatMul(y,
// k), MatMul(p, y) and FusedMatMul(y, v, alpha 2), over [2, 3, 4, 4] s and p and [2, 3, 4, 5]
// k and v in float32; with transposeReader, MatMul(yᵀ, k) through a Transpose too.
func scaledGEMMs(transposeReader bool) *ortgraph.Graph {
	g := scaledGraph()
	y := g.Op("Mul", []string{"s", g.ConstF(ortgraph.Float, 0.25)})
	outs := []string{g.Op("MatMul", []string{y, "k"}), g.Op("MatMul", []string{"p", y}),
		g.Add(ortgraph.NodeSpec{Op: "FusedMatMul", Domain: "com.microsoft", Inputs: []string{y, "v"}, Attrs: []ortgraph.Attr{ortgraph.AFloat("alpha", 2)}})[0]}
	if transposeReader {
		outs = append(outs, g.Op("MatMul", []string{g.Op("Transpose", []string{y}, ortgraph.AInts("perm", 0, 1, 3, 2)), "k"}))
	}
	for i, o := range outs {
		dims := []int64{2, 3, 4, 5}
		if i == 1 {
			dims = []int64{2, 3, 4, 4}
		}
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: o, Type: ortgraph.TensorType(ortgraph.Float, dims)})
	}
	return g
}

// scaledProduct is 0.5·MatMul(s, k), as the recomputed attention scores are scaled, with the
// product and its Relu as outputs.
func scaledProduct() *ortgraph.Graph {
	g := scaledGraph()
	y := g.Op("Mul", []string{g.Op("MatMul", []string{"s", "k"}), g.ConstF(ortgraph.Float, 0.5)})
	for _, o := range []string{y, g.Op("Relu", []string{y})} {
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: o, Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 4, 5})})
	}
	return g
}

// scaledGraph is a graph with scaledInputs as its inputs.
func scaledGraph() *ortgraph.Graph {
	imports := []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}, {Domain: "com.microsoft", Version: 1}}
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, OpsetImport: imports, Graph: &onnxpb.GraphProto{Name: "scaled"}}, Dir: "."}
	g := ortgraph.NewGraph(m)
	for in, dims := range scaledInputs {
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: in, Type: ortgraph.TensorType(ortgraph.Float, dims)})
	}
	slices.SortFunc(g.P.Input, func(a, b *onnxpb.ValueInfoProto) int { return strings.Compare(a.Name, b.Name) })
	g.Reindex()
	return g
}

var scaledInputs = map[string][]int64{"s": {2, 3, 4, 4}, "p": {2, 3, 4, 4}, "k": {2, 3, 4, 5}, "v": {2, 3, 4, 5}}

// TestScaleMatMulGolden: the scalar Mul read by GEMMs only goes into their alphas (2·0.25 for
// the FusedMatMul); read by a Transpose too it stays; scaling a GEMM's product it goes into
// that GEMM's alpha; ONNX Runtime's outputs are the same.
func TestScaleMatMulGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name  string
		g     *ortgraph.Graph
		fused int
	}{
		{"read by GEMMs only", scaledGEMMs(false), 1},
		{"read by a Transpose too", scaledGEMMs(true), 0},
		{"a GEMM's product scaled", scaledProduct(), 1},
	} {
		out.WriteString(fusionGolden(t, c.name, c.g, passes.ScaleMatMul, c.fused, 1e-6, scaledOutputs))
	}
	golden(t, "scalematmul.txt", out.String())
}

// scaledOutputs runs the graph on fixed random inputs and returns its outputs one after the other.
func scaledOutputs(t *testing.T, model []byte) []float32 {
	r := rand.New(rand.NewPCG(8, 9))
	feeds := map[string]*ortrun.Tensor{}
	for _, in := range []string{"k", "p", "s", "v"} {
		feeds[in] = randomFeed(r, scaledInputs[in], 1, false)
	}
	return allOutputs(t, model, feeds)
}
