package autodiff

import (
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// testDomain holds test-only ops whose rules are deliberately wrong.
const testDomain = "test.ortq"

// wrongRules are the test-only rules, added to the gradient table only while
// TestGradientShapeCheck runs.
var wrongRules = map[string]GradFunc{
	// TransposedGrad's rule returns dy transposed: [3, 2] for a [2, 3] input.
	"TransposedGrad": func(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
		g := grads(n)
		g[0] = b.Op("Transpose", []string{dy[0]}, ortgraph.AInts("perm", 1, 0))
		b.SetType(g[0], ortgraph.TensorType(ortgraph.Float, []int64{3, 2}))
		return g, nil
	},
	// UnreducedGrad's input is broadcast along the batch axis ([1, 3] against [2, 3]) and its
	// rule forgets to unbroadcast.
	"UnreducedGrad": func(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
		g := grads(n)
		g[0] = b.Op("Identity", []string{dy[0]})
		return g, nil
	},
	// HalfGrad's rule returns the gradient in float16 for a float input.
	"HalfGrad": func(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
		g := grads(n)
		g[0] = b.Op("Cast", []string{dy[0]}, ortgraph.AInt("to", int64(ortgraph.Float16)))
		return g, nil
	},
	// RightGrad's rule is right: dy unchanged.
	"RightGrad": func(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
		g := grads(n)
		g[0] = b.Op("Identity", []string{dy[0]})
		return g, nil
	},
}

// TestGradientShapeCheck: the driver refuses a gradient whose static shape or element type
// differs from its input's, naming the node, the op and the input.
func TestGradientShapeCheck(t *testing.T) {
	for op, f := range wrongRules {
		gradients[opKey{testDomain, op}] = f
	}
	t.Cleanup(func() {
		for op := range wrongRules {
			delete(gradients, opKey{testDomain, op})
		}
	})
	for _, c := range []struct {
		op      string
		xDims   []int64
		wantErr string
	}{
		{"TransposedGrad", []int64{2, 3}, `node "the_node" (test.ortq.TransposedGrad): gradient of input 0 ("x"): shape [3,2], the input's is [2,3]`},
		{"UnreducedGrad", []int64{1, 3}, `node "the_node" (test.ortq.UnreducedGrad): gradient of input 0 ("x"): shape [2,3], the input's is [1,3]`},
		{"HalfGrad", []int64{2, 3}, `node "the_node" (test.ortq.HalfGrad): gradient of input 0 ("x"): element type FLOAT16, the input's is FLOAT`},
		{"RightGrad", []int64{2, 3}, ""},
	} {
		t.Run(c.op, func(t *testing.T) {
			m := newModel(18)
			gp := m.P.Graph
			gp.Input = []*onnxpb.ValueInfoProto{{Name: "x", Type: ortgraph.TensorType(ortgraph.Float, c.xDims)}}
			gp.Node = []*onnxpb.NodeProto{
				{Name: "the_node", OpType: c.op, Domain: testDomain, Input: []string{"x"}, Output: []string{"y"}},
				{Name: "loss", OpType: "ReduceSum", Input: []string{"y"}, Output: []string{"loss"},
					Attribute: []*onnxpb.AttributeProto{{Name: "keepdims", Type: onnxpb.AttributeProto_INT, I: 0}}},
			}
			g := ortgraph.NewGraph(m)
			g.SetType("y", ortgraph.TensorType(ortgraph.Float, []int64{2, 3}))
			g.SetType("loss", ortgraph.TensorType(ortgraph.Float, []int64{}))
			_, err := Backward(g, "loss", []string{"x"}, Options{})
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatal(err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("error %v, want %q", err, c.wantErr)
			}
		})
	}
}
