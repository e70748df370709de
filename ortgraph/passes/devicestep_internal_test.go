package passes

import (
	"testing"

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
