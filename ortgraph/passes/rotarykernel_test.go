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

// rotaryKernelGraph rotates x [2, 3, 4, 8] (BNSH) and x3 [2, 4, 3·8] (BSNH, num_heads 3) by
// float16 caches [6, 4] at positions pos [2, 4], as the training graphs do; with
// interleaved, the first rotation is interleaved (no Rotary kernel for it).
func rotaryKernelGraph(interleaved bool) *ortgraph.Graph {
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 11, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 23}},
		Graph: &onnxpb.GraphProto{Name: "rotary"}}, Dir: "."}
	g := ortgraph.NewGraph(m)
	x, x3 := ortgraph.TensorType(ortgraph.Float16, []int64{2, 3, 4, 8}), ortgraph.TensorType(ortgraph.Float16, []int64{2, 4, 24})
	g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: "x", Type: x}, &onnxpb.ValueInfoProto{Name: "x3", Type: x3},
		&onnxpb.ValueInfoProto{Name: "cos", Type: ortgraph.TensorType(ortgraph.Float16, []int64{6, 4})},
		&onnxpb.ValueInfoProto{Name: "sin", Type: ortgraph.TensorType(ortgraph.Float16, []int64{6, 4})},
		&onnxpb.ValueInfoProto{Name: "pos", Type: ortgraph.TensorType(ortgraph.Int64, []int64{2, 4})})
	g.Reindex()
	il := int64(0)
	if interleaved {
		il = 1
	}
	y := g.Op("RotaryEmbedding", []string{"x", "cos", "sin", "pos"}, ortgraph.AInt("interleaved", il))
	y3 := g.Op("RotaryEmbedding", []string{"x3", "cos", "sin", "pos"}, ortgraph.AInt("num_heads", 3))
	g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: y, Type: x}, &onnxpb.ValueInfoProto{Name: y3, Type: x3})
	return g
}

// TestRotaryKernelGolden: both rotations become Rotary nodes, or the interleaved one stays;
// ONNX Runtime's outputs (package kernels' CPU kernel for Rotary) equal RotaryEmbedding's
// within float16 rounding.
func TestRotaryKernelGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name        string
		interleaved bool
		fused       int
	}{
		{"halves", false, 2},
		{"interleaved", true, 1},
	} {
		out.WriteString(fusionGolden(t, c.name, rotaryKernelGraph(c.interleaved), passes.RotaryKernel, c.fused, 2e-3, rotaryKernelOutputs))
	}
	golden(t, "rotarykernel.txt", out.String())
}

// rotaryKernelOutputs runs rotaryKernelGraph's serialized graph on fixed random inputs.
func rotaryKernelOutputs(t *testing.T, model []byte) []float32 {
	r := rand.New(rand.NewPCG(30, 31))
	pos := make([]int64, 8)
	for i := range pos {
		pos[i] = r.Int64N(6)
	}
	return allOutputs(t, model, map[string]*ortrun.Tensor{
		"x": randomFeed(r, []int64{2, 3, 4, 8}, 2, true), "x3": randomFeed(r, []int64{2, 4, 24}, 2, true),
		"cos": randomFeed(r, []int64{6, 4}, 0.7, true), "sin": randomFeed(r, []int64{6, 4}, 0.7, true),
		"pos": {DType: ortrun.Int64, Shape: []int64{2, 4}, Data: pos},
	})
}
