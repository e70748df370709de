package passes

import (
	"math"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"google.golang.org/protobuf/proto"
)

// groupedKVGraph is attention with repeated K/V heads, y = Softmax(q·repeat(k)ᵀ/2)·repeat(v)
// (transposed to [batch, seq, heads, d]),
// over q [2, 6, 5, 4] (batch, heads, seq, d) and k, v [2, 2, 5, 4] (three query heads per kv
// head), spelled as transformers' repeat_kv, and near misses GroupedKV must leave alone:
//
//	"repeat":        the pattern (two repeats rewritten)
//	"k-read":        the repeated k is also a graph output (only v's repeat rewritten)
//	"expand-batch":  k's Expand shape repeats the batch axis too (only v's repeat rewritten)
func groupedKVGraph(variant string) (*ortgraph.Graph, *onnxpb.ModelProto) {
	g, m := testModel("groupedkv", 21,
		&onnxpb.ValueInfoProto{Name: "q", Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 6, 5, 4})},
		&onnxpb.ValueInfoProto{Name: "k", Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 2, 5, 4})},
		&onnxpb.ValueInfoProto{Name: "v", Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 2, 5, 4})})
	repeat := func(x string, expand []int64) string {
		u := g.Op("Unsqueeze", []string{x, g.ConstI64(2)})
		e := g.Op("Expand", []string{u, g.ConstI64(expand...)})
		r := g.Op("Reshape", []string{e, g.ConstI64(0, 6, -1, 4)})
		g.SetType(r, ortgraph.TensorType(ortgraph.Float, []int64{2, 6, 5, 4}))
		return r
	}
	kExpand := []int64{1, 1, 3, 1, 1}
	if variant == "expand-batch" {
		kExpand = []int64{2, 1, 3, 1, 1}
	}
	kr, vr := repeat("k", kExpand), repeat("v", []int64{1, 1, 3, 1, 1})
	s := g.Op("MatMul", []string{"q", g.Op("Transpose", []string{kr}, ortgraph.AInts("perm", 0, 1, 3, 2))})
	s = g.Op("Mul", []string{s, g.ConstF(ortgraph.Float, 0.5)})
	y := g.Op("MatMul", []string{g.Op("Softmax", []string{s}, ortgraph.AInt("axis", -1)), vr})
	y = g.Op("Transpose", []string{y}, ortgraph.AInts("perm", 0, 2, 1, 3))
	m.Graph.Output = []*onnxpb.ValueInfoProto{{Name: y, Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 5, 6, 4})}}
	if variant == "k-read" {
		m.Graph.Output = append(m.Graph.Output, &onnxpb.ValueInfoProto{Name: kr, Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 6, 5, 4})})
	}
	g.Reindex()
	return g, m
}

// TestGroupedKV: the rewritten attention reads the kv heads without Expand and its output
// equals the original graph's on ONNX Runtime (float32, within 1e-6); near misses keep their
// Expand and say why.
func TestGroupedKV(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		variant       string
		fused, expand int // repeats rewritten, Expands left
	}{{"repeat", 2, 0}, {"k-read", 1, 1}, {"expand-batch", 1, 1}} {
		t.Run(c.variant, func(t *testing.T) {
			_, om := groupedKVGraph(c.variant)
			before, _ := proto.Marshal(om)
			g, m := groupedKVGraph(c.variant)
			ctx, err := ortgraph.RunPasses(g, nil, nil, GroupedKV)
			if err != nil {
				t.Fatal(err)
			}
			res := ortgraph.ResultOf[*GroupedKVResult](ctx, GroupedKV)
			if res.Fused != c.fused || (c.expand > 0) != (len(res.Skipped) > 0) {
				t.Fatalf("fused %d, want %d; skipped %v:\n%s", res.Fused, c.fused, res.Skipped, ortgraph.Dump(g))
			}
			expand := 0
			for _, n := range g.P.Node {
				if n.OpType == "Expand" {
					expand++
				}
			}
			if expand != c.expand {
				t.Fatalf("%d Expand nodes left, want %d:\n%s", expand, c.expand, ortgraph.Dump(g))
			}
			after, _ := proto.Marshal(m)
			a, b := evalGroupedKV(t, before), evalGroupedKV(t, after)
			for i := range a {
				if d := math.Abs(float64(a[i] - b[i])); d > 1e-6 {
					t.Fatalf("element %d: repeated %g, grouped %g", i, a[i], b[i])
				}
			}
		})
	}
}

func evalGroupedKV(t *testing.T, model []byte) []float32 {
	t.Helper()
	s, err := ortrun.NewSessionFromBytes(model, ortrun.Options{Device: "cpu", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := map[string]*ortrun.Tensor{}
	for j, name := range []string{"q", "k", "v"} {
		shape := []int64{2, 2, 5, 4}
		if name == "q" {
			shape[1] = 6
		}
		x := make([]float32, shape[0]*shape[1]*shape[2]*shape[3])
		for i := range x {
			x[i] = float32(math.Sin(float64(i)*0.37 + float64(j)))
		}
		in[name] = &ortrun.Tensor{DType: ortrun.Float32, Shape: shape, Data: x}
	}
	out, err := s.Run(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out[s.OutputNames()[0]].Data.([]float32)
}
