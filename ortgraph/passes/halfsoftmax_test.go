package passes

import (
	"math"
	"testing"

	"github.com/ortq/ortq/internal/half"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"google.golang.org/protobuf/proto"
)

// halfSoftmaxGraph is x (fp16 [2, 3, 40]) → Cast(float) → Softmax → Cast(fp16) → Mul 2,
// the attention idiom, with variants that must not be rewritten.
func halfSoftmaxGraph(variant string) (*ortgraph.Graph, *onnxpb.ModelProto) {
	g, m := testModel("attn", 18, &onnxpb.ValueInfoProto{Name: "x", Type: ortgraph.TensorType(ortgraph.Float16, []int64{2, 3, 40})})
	x32 := g.Op("Cast", []string{"x"}, ortgraph.AInt("to", int64(ortgraph.Float)))
	p32 := g.Op("Softmax", []string{x32}, ortgraph.AInt("axis", -1))
	to := ortgraph.Float16
	if variant == "cast-to-float" {
		to = ortgraph.Float
	}
	p := g.Op("Cast", []string{p32}, ortgraph.AInt("to", int64(to)))
	y := g.Op("Mul", []string{p, g.ConstF(to, 2)})
	m.Graph.Output = []*onnxpb.ValueInfoProto{{Name: y, Type: ortgraph.TensorType(to, []int64{2, 3, 40})}}
	if variant == "float-probabilities-read" {
		m.Graph.Output = append(m.Graph.Output, &onnxpb.ValueInfoProto{Name: p32, Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 40})})
	}
	g.Reindex()
	return g, m
}

// TestHalfSoftmax: the sandwich becomes one fp16 Softmax whose output equals the original
// graph's on ONNX Runtime within one fp16 rounding; near misses are left alone.
func TestHalfSoftmax(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		variant string
		folded  int
	}{{"", 1}, {"cast-to-float", 0}, {"float-probabilities-read", 0}} {
		t.Run("variant="+c.variant, func(t *testing.T) {
			_, om := halfSoftmaxGraph(c.variant)
			before, _ := proto.Marshal(om)
			g, m := halfSoftmaxGraph(c.variant)
			ctx, err := ortgraph.RunPasses(g, nil, nil, HalfSoftmax)
			if err != nil {
				t.Fatal(err)
			}
			if n := ortgraph.ResultOf[int](ctx, HalfSoftmax); n != c.folded {
				t.Fatalf("folded %d softmaxes, want %d:\n%s", n, c.folded, ortgraph.Dump(g))
			}
			if c.folded == 0 {
				return
			}
			for _, n := range g.P.Node {
				if n.OpType == "Cast" || n.OpType == "Softmax" && n.Input[0] != "x" {
					t.Fatalf("rewritten graph:\n%s\nwant a Softmax on x and no Cast", ortgraph.Dump(g))
				}
			}
			after, _ := proto.Marshal(m)
			x := make([]uint16, 2*3*40)
			for i := range x {
				x[i] = half.Float32ToFloat16(float32(math.Sin(float64(i)*0.7)) * 6)
			}
			a, b := runHalf(t, before, x), runHalf(t, after, x)
			for i := range a {
				if d := math.Abs(float64(half.Float16ToFloat32(a[i]) - half.Float16ToFloat32(b[i]))); d > 2*math.Abs(float64(half.Float16ToFloat32(a[i])))/1024+1e-7 {
					t.Fatalf("element %d: original %g, folded %g", i, half.Float16ToFloat32(a[i]), half.Float16ToFloat32(b[i]))
				}
			}
		})
	}
}

// testModel is an empty model of the default domain's opset with the given graph inputs.
func testModel(name string, opset int64, inputs ...*onnxpb.ValueInfoProto) (*ortgraph.Graph, *onnxpb.ModelProto) {
	m := &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: opset}},
		Graph: &onnxpb.GraphProto{Name: name, Input: inputs}}
	return ortgraph.NewGraph(&ortgraph.Model{P: m, Dir: "."}), m
}

func runHalf(t *testing.T, model []byte, x []uint16) []uint16 {
	t.Helper()
	s, err := ortrun.NewSessionFromBytes(model, ortrun.Options{Device: "cpu", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(map[string]*ortrun.Tensor{"x": {DType: ortrun.Float16, Shape: []int64{2, 3, 40}, Data: x}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range out {
		return v.Data.([]uint16)
	}
	t.Fatal("no output")
	return nil
}
