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

// bnb4ChainGraph is W [4, 16] = the float16 dequantization chain autodiff.Bnb4Weight writes
// (blocks of 16: the bytes gated on the input "gate", cast to int32, a Gather of the [256, 2]
// table, the absmax product, two Reshapes) over random bytes, table and absmax; with
// ungated, the chain reads the bytes directly, as the dense steps' do.
func bnb4ChainGraph(ungated bool) *ortgraph.Graph {
	const n, k, bs = 4, 16, 16
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}},
		Graph: &onnxpb.GraphProto{Name: "bnb4-chain"}}, Dir: "."}
	g := ortgraph.NewGraph(m)
	g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: "gate", Type: ortgraph.TensorType(ortgraph.Bool, []int64{})})
	r := rand.New(rand.NewPCG(50, 51))
	b := make([]byte, n*k/2)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	lut, absmax := make([]float32, 512), make([]float32, n*k/bs)
	for i := range lut {
		lut[i] = half.RoundFloat16(float32(r.NormFloat64()))
	}
	for i := range absmax {
		absmax[i] = half.RoundFloat16(float32(0.1 + r.Float64()))
	}
	g.AddInitializer(ortgraph.BytesTensor("B", ortgraph.Uint8, []int64{n * k / 2}, b))
	g.AddInitializer(ortgraph.FloatTensor("lut", ortgraph.Float16, []int64{256, 2}, lut))
	g.AddInitializer(ortgraph.FloatTensor("absmax", ortgraph.Float16, []int64{n * k / bs}, absmax))
	g.Reindex()
	bytes := "B"
	if !ungated {
		bytes = g.Op("Where", []string{"gate", "B", "B"})
	}
	idx := g.Op("Cast", []string{bytes}, ortgraph.AInt("to", int64(onnxpb.TensorProto_INT32)))
	v := g.Op("Reshape", []string{g.Op("Gather", []string{"lut", idx}), g.ConstI64(n*k/bs, bs)})
	w := g.Op("Reshape", []string{g.Op("Mul", []string{v, g.Op("Reshape", []string{"absmax", g.ConstI64(n*k/bs, 1)})}), g.ConstI64(n, k)})
	g.SetType(w, ortgraph.TensorType(ortgraph.Float16, []int64{n, k}))
	g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: w, Type: g.Type(w)})
	return g
}

// TestBnb4KernelGolden: the gated chain becomes one DequantBnb4 node, the ungated one stays;
// ONNX Runtime's W (package kernels' CPU kernel) equals the chain's.
func TestBnb4KernelGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name    string
		ungated bool
		fused   int
	}{{"gated", false, 1}, {"ungated", true, 0}} {
		out.WriteString(fusionGolden(t, c.name, bnb4ChainGraph(c.ungated), passes.Bnb4Kernel, c.fused, 1e-3, func(t *testing.T, model []byte) []float32 {
			return allOutputs(t, model, map[string]*ortrun.Tensor{"gate": {DType: ortrun.Bool, Shape: []int64{}, Data: []bool{true}}})
		}))
	}
	golden(t, "bnb4kernel.txt", out.String())
}
