package autodiff

import (
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// noFDCase names the ops of the gradient table that cannot have a finite-difference case,
// with the reason.
var noFDCase = map[opKey]string{
	{"", "DequantizeLinear"}: "its rule always refuses (quantized data and scales are frozen); TestDequantizeLinearRefuses checks that",
}

// ops returns the ops of the forward graph the case builds (the loss's own ops excluded),
// which are the ops whose gradient rules the case exercises.
func (c gradCase) ops() map[opKey]bool {
	m := newModel(c.opset)
	for _, in := range c.ins {
		m.P.Graph.Input = append(m.P.Graph.Input, &onnxpb.ValueInfoProto{Name: in.name, Type: ortgraph.TensorType(in.dt, in.dims)})
	}
	g := ortgraph.NewGraph(m)
	g.Reindex()
	c.build(g)
	out := map[opKey]bool{}
	for _, n := range m.P.Graph.Node {
		out[opKey{n.Domain, n.OpType}] = true
	}
	return out
}

// TestGradientCoverage: every op of the gradient table appears in the forward graph of at
// least one finite-difference case of TestGradients, or is listed in noFDCase with a reason
// (and then has no case, so the list cannot go stale); every op of noGradient has no rule.
// It builds the graphs only, so it runs without ONNX Runtime.
func TestGradientCoverage(t *testing.T) {
	covered := map[opKey]bool{}
	for _, c := range gradCases() {
		for k := range c.ops() {
			covered[k] = true
		}
	}
	for k := range gradients {
		_, exempt := noFDCase[k]
		switch {
		case k.domain == testDomain:
		case !covered[k] && !exempt:
			t.Errorf("op %s has a gradient rule but no finite-difference case in fd_test.go's gradCases", name(k))
		case covered[k] && exempt:
			t.Errorf("op %s has a finite-difference case; remove it from noFDCase", name(k))
		}
	}
	for k := range noFDCase {
		if gradients[k] == nil {
			t.Errorf("noFDCase lists %s, which has no gradient rule", name(k))
		}
	}
	for k := range noGradient {
		if gradients[k] != nil {
			t.Errorf("op %s is in both gradients and noGradient", name(k))
		}
	}
}

func name(k opKey) string {
	if k.domain == "" {
		return k.op
	}
	return k.domain + "." + k.op
}

// TestDequantizeLinearRefuses: a gradient through DequantizeLinear (asked for its scale) is
// an error naming the node, not a silent zero.
func TestDequantizeLinearRefuses(t *testing.T) {
	m := newModel(21)
	gp := m.P.Graph
	gp.Input = []*onnxpb.ValueInfoProto{{Name: "s", Type: ortgraph.TensorType(ortgraph.Float, []int64{4})}}
	g := ortgraph.NewGraph(m)
	g.AddInitializer(ortgraph.BytesTensor("q", ortgraph.Uint8, []int64{4}, []byte{1, 2, 3, 4}))
	g.Reindex()
	y := g.Op("DequantizeLinear", []string{"q", "s"}, ortgraph.AInt("axis", 0))
	loss := g.Op("ReduceSum", []string{y}, ortgraph.AInt("keepdims", 0))
	g.SetType(loss, ortgraph.TensorType(ortgraph.Float, []int64{}))
	_, err := Backward(g, loss, []string{"s"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "does not train quantization scales") {
		t.Fatalf("error %v, want the DequantizeLinear refusal", err)
	}
}
