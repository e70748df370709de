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

// normGraph is a graph over float16 x [2, 3, 8] and w [8] (and float32 r [2, 3, 1], dy and
// res [2, 3, 8] for the gradient) among ins, and the outputs body returns.
func normGraph(name string, ins []string, body func(g *ortgraph.Graph) []string) *ortgraph.Graph {
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}},
		Graph: &onnxpb.GraphProto{Name: name}}, Dir: "."}
	g := ortgraph.NewGraph(m)
	types := map[string]*onnxpb.TypeProto{"x": ortgraph.TensorType(ortgraph.Float16, []int64{2, 3, 8}),
		"w": ortgraph.TensorType(ortgraph.Float16, []int64{8}), "r": ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 1}),
		"dy": ortgraph.TensorType(ortgraph.Float16, []int64{2, 3, 8}), "res": ortgraph.TensorType(ortgraph.Float16, []int64{2, 3, 8})}
	for _, in := range ins {
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: in, Type: types[in]})
	}
	g.Reindex()
	for _, o := range body(g) {
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: o, Type: g.Type(o)})
	}
	return g
}

// TestRMSNormKernelGolden: the float16 RMSNorms become RMSNorm nodes (one without its
// inv_std_var output, one with it read), the float16-statistics one stays; ONNX Runtime's
// outputs (package kernels' CPU kernel) equal SimplifiedLayerNormalization's.
func TestRMSNormKernelGolden(t *testing.T) {
	ortruntest.Lib(t)
	g := normGraph("rmsnorm", []string{"x", "w"}, func(g *ortgraph.Graph) []string {
		y1 := g.Add(ortgraph.NodeSpec{Op: "SimplifiedLayerNormalization", Inputs: []string{"x", "w"},
			Attrs: []ortgraph.Attr{ortgraph.AInt("axis", -1), ortgraph.AFloat("epsilon", 1e-5), ortgraph.AInt("stash_type", 1)}})[0]
		o := g.Add(ortgraph.NodeSpec{Op: "SimplifiedLayerNormalization", Inputs: []string{"x", "w"}, NOut: 2,
			Attrs: []ortgraph.Attr{ortgraph.AFloat("epsilon", 0.25)}})
		y3 := g.Add(ortgraph.NodeSpec{Op: "SimplifiedLayerNormalization", Inputs: []string{"x", "w"},
			Attrs: []ortgraph.Attr{ortgraph.AInt("stash_type", 0)}})[0]
		g.SetType(y1, g.Type("x"))
		g.SetType(o[0], g.Type("x"))
		g.SetType(o[1], ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 1}))
		g.SetType(y3, g.Type("x"))
		return []string{y1, o[0], o[1], y3}
	})
	out := fusionGolden(t, "rmsnorm", g, passes.RMSNormKernel, 2, 2e-3, func(t *testing.T, model []byte) []float32 {
		r := rand.New(rand.NewPCG(40, 41))
		return allOutputs(t, model, map[string]*ortrun.Tensor{"x": randomFeed(r, []int64{2, 3, 8}, 2, true),
			"w": randomFeed(r, []int64{8}, 1, true)})
	})
	golden(t, "rmsnormkernel.txt", out)
}

// TestNormGradSumGolden: Sum(res, RMSNormGrad(...)) becomes one RMSNormGrad reading res; an
// RMSNormGrad whose dx is read elsewhere keeps its Add. ONNX Runtime's outputs (package
// kernels' CPU kernel) are unchanged within float16 rounding.
func TestNormGradSumGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name  string
		dxOut bool
		fused int
	}{{"sum", false, 1}, {"dx read", true, 0}} {
		g := normGraph("norm-grad-sum", []string{"x", "w", "r", "dy", "res"}, func(g *ortgraph.Graph) []string {
			dx := g.Add(ortgraph.NodeSpec{Op: ortgraph.OpRMSNormGrad, Domain: ortgraph.OrtqDomain, Inputs: []string{"x", "w", "r", "dy"}})[0]
			g.SetType(dx, g.Type("x"))
			s := g.Op("Sum", []string{"res", dx})
			g.SetType(s, g.Type("x"))
			if c.dxOut {
				return []string{s, dx}
			}
			return []string{s}
		})
		g.M.SetOpset(ortgraph.OrtqDomain, 1)
		out.WriteString(fusionGolden(t, c.name, g, passes.NormGradSum, c.fused, 2e-3, func(t *testing.T, model []byte) []float32 {
			r := rand.New(rand.NewPCG(42, 43))
			rr := make([]float32, 6)
			for i := range rr {
				rr[i] = float32(0.5 + r.Float64())
			}
			return allOutputs(t, model, map[string]*ortrun.Tensor{"x": randomFeed(r, []int64{2, 3, 8}, 2, true),
				"w": randomFeed(r, []int64{8}, 1, true), "r": {DType: ortrun.Float32, Shape: []int64{2, 3, 1}, Data: rr},
				"dy": randomFeed(r, []int64{2, 3, 8}, 1, true), "res": randomFeed(r, []int64{2, 3, 8}, 1, true)})
		}))
	}
	golden(t, "normgradsum.txt", out.String())
}
