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

// rotaryGraph is y = x·cos + rotate_half(x)·sin over x [2, 3, 5, 8] (batch, heads, seq, d)
// with frequencies f fed as an input, in the spellings Rotary fuses and near misses it must
// leave alone:
//
//	"synth":      f [5, 4], cos = Cos(Concat(f, f)) [5, 8]              (ortq import / synth)
//	"export":     f [2, 5, 4], cos = Unsqueeze(Cos(Concat(f, f)), [1])   (stock dynamo export)
//	"half-read":  "synth" with rotate_half's Concat also a graph output
//	"other-sin":  "synth" with sin from another frequency input
func rotaryGraph(variant string) (*ortgraph.Graph, *onnxpb.ModelProto) {
	fdims := []int64{5, 4}
	if variant == "export" {
		fdims = []int64{2, 5, 4}
	}
	g, m := testModel("rotary", 21,
		&onnxpb.ValueInfoProto{Name: "x", Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 5, 8})},
		&onnxpb.ValueInfoProto{Name: "f", Type: ortgraph.TensorType(ortgraph.Float, fdims)},
		&onnxpb.ValueInfoProto{Name: "f2", Type: ortgraph.TensorType(ortgraph.Float, fdims)})
	trig := func(op, f string) string {
		v := g.Op(op, []string{g.Op("Concat", []string{f, f}, ortgraph.AInt("axis", -1))})
		if variant == "export" {
			v = g.Op("Unsqueeze", []string{v, g.ConstI64(1)})
		}
		return v
	}
	sinF := "f"
	if variant == "other-sin" {
		sinF = "f2"
	}
	cos, sin := trig("Cos", "f"), trig("Sin", sinF)
	lo := g.Op("Slice", []string{"x", g.ConstI64(0), g.ConstI64(4), g.ConstI64(3)})
	hi := g.Op("Slice", []string{"x", g.ConstI64(4), g.ConstI64(math.MaxInt64), g.ConstI64(-1)})
	rot := g.Op("Concat", []string{g.Op("Neg", []string{hi}), lo}, ortgraph.AInt("axis", -1))
	y := g.Op("Add", []string{g.Op("Mul", []string{"x", cos}), g.Op("Mul", []string{rot, sin})})
	m.Graph.Output = []*onnxpb.ValueInfoProto{{Name: y, Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 5, 8})}}
	if variant == "half-read" {
		m.Graph.Output = append(m.Graph.Output, &onnxpb.ValueInfoProto{Name: rot, Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 3, 5, 8})})
	}
	g.Reindex()
	return g, m
}

// TestRotary: the decomposed rotary embedding becomes one RotaryEmbedding whose output
// equals the original graph's on ONNX Runtime (float32, within 1e-6); near misses are left
// alone.
func TestRotary(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		variant string
		fused   int
	}{{"synth", 1}, {"export", 1}, {"half-read", 0}, {"other-sin", 0}} {
		t.Run(c.variant, func(t *testing.T) {
			_, om := rotaryGraph(c.variant)
			before, _ := proto.Marshal(om)
			g, m := rotaryGraph(c.variant)
			ctx, err := ortgraph.RunPasses(g, nil, nil, Rotary, ORTCompat)
			if err != nil {
				t.Fatal(err)
			}
			res := ortgraph.ResultOf[*RotaryResult](ctx, Rotary)
			if res.Fused != c.fused {
				t.Fatalf("fused %d, want %d (skipped: %v):\n%s", res.Fused, c.fused, res.Skipped, ortgraph.Dump(g))
			}
			if c.fused == 0 {
				if len(res.Skipped) == 0 {
					t.Errorf("no reason given for leaving the match")
				}
				return
			}
			if v := g.M.OpsetVersion(""); v != 23 {
				t.Errorf("opset %d after the rewrite, want 23", v)
			}
			rotary := 0
			for _, n := range g.P.Node {
				if n.OpType == "Neg" || n.OpType == "Mul" {
					t.Fatalf("rewritten graph keeps a %s:\n%s", n.OpType, ortgraph.Dump(g))
				}
				if n.OpType == "RotaryEmbedding" {
					rotary++
				}
			}
			if rotary != 1 {
				t.Fatalf("%d RotaryEmbedding nodes, want 1:\n%s", rotary, ortgraph.Dump(g))
			}
			after, _ := proto.Marshal(m)
			x, f := rotaryInputs(c.variant)
			a, b := evalRotary(t, before, x, f), evalRotary(t, after, x, f)
			for i := range a {
				if d := math.Abs(float64(a[i] - b[i])); d > 1e-6 {
					t.Fatalf("element %d: decomposed %g, RotaryEmbedding %g", i, a[i], b[i])
				}
			}
		})
	}
}

func rotaryInputs(variant string) (x, f []float32) {
	x = make([]float32, 2*3*5*8)
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.37))
	}
	inv := []float64{1, 0.1, 0.01, 0.001}
	for b := range 2 {
		for s := range 5 {
			for j := range 4 {
				f = append(f, float32(float64(s+3*b)*inv[j]))
			}
		}
		if variant != "export" {
			break
		}
	}
	return x, f
}

func evalRotary(t *testing.T, model []byte, x, f []float32) []float32 {
	t.Helper()
	s, err := ortrun.NewSessionFromBytes(model, ortrun.Options{Device: "cpu", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fshape := []int64{5, 4}
	if len(f) > 20 {
		fshape = []int64{2, 5, 4}
	}
	out, err := s.Run(map[string]*ortrun.Tensor{
		"x":  {DType: ortrun.Float32, Shape: []int64{2, 3, 5, 8}, Data: x},
		"f":  {DType: ortrun.Float32, Shape: fshape, Data: f},
		"f2": {DType: ortrun.Float32, Shape: fshape, Data: f},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range out {
		if name == s.OutputNames()[0] {
			return v.Data.([]float32)
		}
	}
	t.Fatal("no output")
	return nil
}
