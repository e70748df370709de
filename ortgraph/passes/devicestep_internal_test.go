package passes

import (
	"fmt"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// TestSplitConcatTrees: 1, 32, 33 and 112 parts (the 3B q/v adapter has 112 tensors) are
// split and re-joined with nodes of at most maxKernelArgs outputs or inputs, and the leaves
// come out in order with their sizes.
func TestSplitConcatTrees(t *testing.T) {
	for _, n := range []int{1, 32, 33, 112, 1100} {
		g := ortgraph.NewGraph(&ortgraph.Model{P: &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{}}})
		sizes := make([]int64, n)
		var total int64
		for i := range sizes {
			sizes[i] = int64(i%7 + 1)
			total += sizes[i]
		}
		g.P.Input = []*onnxpb.ValueInfoProto{{Name: "flat", Type: ortgraph.TensorType(ortgraph.Float, []int64{total})}}
		g.Reindex()
		parts := splitTree(g, "flat", sizes)
		if len(parts) != n {
			t.Fatalf("%d parts: splitTree returned %d", n, len(parts))
		}
		// Each leaf's size is its entry in its Split's sizes.
		for i, p := range parts {
			if n == 1 {
				break
			}
			sp := g.Producer(p)
			split, _ := g.ConstInts(sp.Input[1])
			for j, o := range sp.Output {
				if o == p && split[j] != sizes[i] {
					t.Fatalf("%d parts: leaf %d has size %d, want %d", n, i, split[j], sizes[i])
				}
			}
		}
		joined := concatTree(g, parts)
		for _, nd := range g.P.Node {
			if len(nd.Input) > maxKernelArgs || len(nd.Output) > maxKernelArgs {
				t.Errorf("%d parts: %s has %d inputs and %d outputs", n, nd.OpType, len(nd.Input), len(nd.Output))
			}
		}
		// The concatenation reads the leaves in order.
		var leaves func(v string) []string
		leaves = func(v string) []string {
			if nd := g.Producer(v); nd != nil && nd.OpType == "Concat" {
				var out []string
				for _, in := range nd.Input {
					out = append(out, leaves(in)...)
				}
				return out
			}
			return []string{v}
		}
		got := leaves(joined)
		for i := range parts {
			if got[i] != parts[i] {
				t.Fatalf("%d parts: concatenation position %d reads %s, want %s", n, i, got[i], parts[i])
			}
		}
	}
}

// TestCaptureBlockers: GatherND and com.microsoft.MatMulBnb4 are reported once each, other
// ops (and a MatMulBnb4 outside com.microsoft) are not.
func TestCaptureBlockers(t *testing.T) {
	g := ortgraph.NewGraph(&ortgraph.Model{P: &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{}}})
	if b := CaptureBlockers(g); b != nil {
		t.Errorf("empty graph: %v", b)
	}
	for _, op := range []string{"MatMul", "GatherND", "Gather", "GatherND", "MatMulBnb4"} {
		g.P.Node = append(g.P.Node, &onnxpb.NodeProto{OpType: op, Name: op})
	}
	if b := CaptureBlockers(g); len(b) != 1 || b[0] != "GatherND" {
		t.Errorf("blockers %v, want [GatherND]", b)
	}
	for range 2 {
		g.P.Node = append(g.P.Node, &onnxpb.NodeProto{OpType: "MatMulBnb4", Domain: "com.microsoft"})
	}
	if b := CaptureBlockers(g); len(b) != 2 || b[0] != "GatherND" || b[1] != "MatMulBnb4" {
		t.Errorf("blockers %v, want [GatherND MatMulBnb4]", b)
	}
}

// TestCastsHoisted: where every reader of every LoRA input is a Cast to one activation type,
// feedParams casts the flat vector once (one Cast, reading it) and the readers read its
// split parts; any other reader keeps the float32 split. flatGrads concatenates float16
// gradients (Casts to float32 of one type) before one Cast, and float32 ones as they are.
func TestCastsHoisted(t *testing.T) {
	for _, c := range []struct {
		name      string
		readers   []int32 // the Cast target of each LoRA input's reader; 0: an Identity reads it
		wantCasts int     // Casts left reading a parameter or the flat vector
	}{
		{"float16 casts", []int32{ortgraph.Float16, ortgraph.Float16, ortgraph.Float16}, 1},
		{"mixed casts", []int32{ortgraph.Float16, ortgraph.BF16}, 0},
		{"a plain reader", []int32{ortgraph.Float16, 0}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := ortgraph.NewGraph(&ortgraph.Model{P: &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{}}})
			var ps []stepParam
			var layout []manifest.FlatParam
			for i, to := range c.readers {
				name := fmt.Sprintf("p%d", i)
				g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: name, Type: ortgraph.TensorType(ortgraph.Float, []int64{2, 3})})
				ps = append(ps, stepParam{name: name, grad: "grad." + name, shape: []int64{2, 3}})
				layout = append(layout, manifest.FlatParam{Name: name, Offset: int64(6 * i), Size: 6})
				var r string
				if to != 0 {
					r = g.Op("Cast", []string{name}, ortgraph.AInt("to", int64(to)))
				} else {
					r = g.Op("Identity", []string{name})
				}
				g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: r})
			}
			g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: "flat", Type: ortgraph.TensorType(ortgraph.Float, []int64{int64(6 * len(ps))})})
			g.Reindex()
			feedParams(g, ps, layout, "flat")
			if err := g.TopoSort(); err != nil {
				t.Fatal(err)
			}
			g.Prune()
			casts := 0
			for _, n := range g.P.Node {
				if n.OpType == "Cast" && n.Input[0] == "flat" {
					casts++
				}
			}
			if casts != c.wantCasts {
				t.Errorf("%d Casts of the flat vector, want %d\n%s", casts, c.wantCasts, ortgraph.Dump(g))
			}
			for _, o := range g.P.Output {
				if p := g.Producer(o.Name); p == nil || p.OpType == "Cast" && isInput(g, p.Input[0]) {
					t.Errorf("output %s still reads a LoRA input", o.Name)
				}
			}
		})
	}
	for _, from := range []int32{ortgraph.Float16, ortgraph.Float} {
		g := ortgraph.NewGraph(&ortgraph.Model{P: &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{}}})
		var ps []stepParam
		for i := range 3 {
			dy := fmt.Sprintf("dy%d", i)
			g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: dy, Type: ortgraph.TensorType(from, []int64{2, 3})})
			gv := dy
			if from != ortgraph.Float {
				gv = g.Op("Cast", []string{dy}, ortgraph.AInt("to", int64(ortgraph.Float)))
			}
			ps = append(ps, stepParam{name: fmt.Sprintf("p%d", i), grad: g.Op("Identity", []string{gv}), shape: []int64{2, 3}})
		}
		g.Reindex()
		grads := flatGrads(g, ps, 18)
		cat := g.Producer(grads)
		if from != ortgraph.Float {
			if cat.OpType != "Cast" {
				t.Fatalf("float16 gradients: the flat gradient is a %s, want one Cast of their concatenation", cat.OpType)
			}
			cat = g.Producer(cat.Input[0])
		}
		if cat.OpType != "Concat" || len(cat.Input) != 3 {
			t.Fatalf("%s gradients: the flat gradient is a %s of %d, want a Concat of 3", ortgraph.DTypeName(from), cat.OpType, len(cat.Input))
		}
		for i, in := range cat.Input {
			if src := g.Producer(in).Input[0]; src != fmt.Sprintf("dy%d", i) {
				t.Errorf("%s gradients: part %d reshapes %s, want dy%d", ortgraph.DTypeName(from), i, src, i)
			}
		}
	}
}
