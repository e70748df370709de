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

// swiGLUGraph is h = Mul(u, Mul(Sigmoid(g), g)) over [2, 3, 8] float16 g and u, as an MLP's
// activation (operands in the exporters' other order); with sigmoidOut, σ(g) is an output
// too, as a backward pass without SwiGLUGrad reads it.
func swiGLUGraph(sigmoidOut bool) *ortgraph.Graph {
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}},
		Graph: &onnxpb.GraphProto{Name: "swiglu"}}, Dir: "."}
	g := ortgraph.NewGraph(m)
	typ := ortgraph.TensorType(ortgraph.Float16, []int64{2, 3, 8})
	for _, in := range []string{"g", "u"} {
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: in, Type: typ})
	}
	g.Reindex()
	s := g.Op("Sigmoid", []string{"g"})
	h := g.Op("Mul", []string{"u", g.Op("Mul", []string{s, "g"})})
	outs := []string{h}
	if sigmoidOut {
		outs = append(outs, s)
	}
	for _, o := range outs {
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: o, Type: typ})
	}
	return g
}

// TestSwiGLUForwardGolden: the activation becomes one SwiGLU node, or stays where σ(g) is
// read; ONNX Runtime's outputs (the CPU kernel of package kernels for SwiGLU) equal the
// decomposed graph's within float16 rounding.
func TestSwiGLUForwardGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name       string
		sigmoidOut bool
		fused      int
	}{
		{"activation", false, 1},
		{"sigmoid read", true, 0},
	} {
		out.WriteString(fusionGolden(t, c.name, swiGLUGraph(c.sigmoidOut), passes.SwiGLUForward, c.fused, 2e-3, swiGLUOutputs))
	}
	golden(t, "swiglu.txt", out.String())
}

// swiGLUOutputs runs swiGLUGraph's serialized graph on fixed random g and u and returns its
// outputs as float32, one after the other.
func swiGLUOutputs(t *testing.T, model []byte) []float32 {
	r := rand.New(rand.NewPCG(10, 11))
	feeds := map[string]*ortrun.Tensor{}
	for _, in := range []string{"g", "u"} {
		feeds[in] = randomFeed(r, []int64{2, 3, 8}, 3, true)
	}
	return allOutputs(t, model, feeds)
}
