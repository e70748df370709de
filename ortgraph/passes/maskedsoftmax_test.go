package passes_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ortq/ortq/internal/half"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// maskedSoftmaxGraph is p = Softmax(Add(mask, s)) over float16 scores s [batch, 3, seq, seq]
// and a mask [batch, 1, seq, seq] (the operands in the other order); with sumOut, the sum is
// an output too.
func maskedSoftmaxGraph(sumOut bool) *ortgraph.Graph {
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}},
		Graph: &onnxpb.GraphProto{Name: "masked-softmax"}}, Dir: "."}
	g := ortgraph.NewGraph(m)
	st := ortgraph.SymTensorType(ortgraph.Float16, []string{"batch", "3", "seq", "seq"})
	g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: "s", Type: st},
		&onnxpb.ValueInfoProto{Name: "mask", Type: ortgraph.SymTensorType(ortgraph.Float16, []string{"batch", "1", "seq", "seq"})})
	g.Reindex()
	sum := g.Op("Add", []string{"mask", "s"})
	g.SetType(sum, st)
	p := g.Op("Softmax", []string{sum}, ortgraph.AInt("axis", -1))
	g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: p, Type: st})
	if sumOut {
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: sum, Type: st})
	}
	return g
}

// TestMaskedSoftmaxGolden: the masked softmax becomes one MaskedSoftmax node, or stays where
// the sum is read; ONNX Runtime's outputs (package kernels' CPU kernel) equal the Add and
// Softmax's within float16 rounding.
func TestMaskedSoftmaxGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name   string
		sumOut bool
		fused  int
	}{
		{"masked softmax", false, 1},
		{"sum read", true, 0},
	} {
		out.WriteString(fusionGolden(t, c.name, maskedSoftmaxGraph(c.sumOut), passes.MaskedSoftmax, c.fused, 2e-3, maskedSoftmaxOutputs))
	}
	golden(t, "maskedsoftmax.txt", out.String())
}

// maskedSoftmaxOutputs runs maskedSoftmaxGraph's serialized graph on fixed random scores and
// a causal mask of −65504, batch 2 and seq 16.
func maskedSoftmaxOutputs(t *testing.T, model []byte) []float32 {
	r := rand.New(rand.NewPCG(32, 33))
	mask := make([]float32, 2*16*16)
	for i := range mask {
		if i%16 > i/16%16 {
			mask[i] = -65504
		}
	}
	return allOutputs(t, model, map[string]*ortrun.Tensor{
		"s":    randomFeed(r, []int64{2, 3, 16, 16}, 3, true),
		"mask": {DType: ortrun.Float16, Shape: []int64{2, 1, 16, 16}, Data: half.EncodeFloat16(mask)},
	})
}
