package autodiff

import (
	"math/rand/v2"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"google.golang.org/protobuf/proto"
)

// swiGLU builds h = silu(g)·u, with silu(g) = Mul(g, Sigmoid(g)) as the exporters write it,
// over g and u cast to dt (and h cast back to float32 for the loss); swap puts u first.
func swiGLU(dt int32, swap bool) func(g *ortgraph.Graph) string {
	return func(g *ortgraph.Graph) string {
		cast := func(v string, to int32) string { return g.Op("Cast", []string{v}, ortgraph.AInt("to", int64(to))) }
		x, u := cast("g", dt), cast("u", dt)
		a := g.Op("Mul", []string{x, g.Op("Sigmoid", []string{x})})
		ins := []string{a, u}
		if swap {
			ins = []string{u, a}
		}
		return cast(g.Op("Mul", ins), ortgraph.Float)
	}
}

// TestSwiGLUGradFused checks the SwiGLU rule: with FusedKernels the float16 gradient is one
// ai.ortq SwiGLUGrad node (and none without), and both the fused and the decomposed float16
// gradients of g and u equal float32's within float16 rounding; the float32 graph's gradients
// are checked against finite differences by TestGradients' Mul and Sigmoid cases.
func TestSwiGLUGradFused(t *testing.T) {
	ortruntest.Lib(t)
	ins := func() []tin {
		return []tin{{name: "g", dt: ortgraph.Float, dims: []int64{4, 3, 40}, wrt: true}, {name: "u", dt: ortgraph.Float, dims: []int64{4, 3, 40}, wrt: true}}
	}
	run := func(c gradCase) (map[string][]float64, int) {
		grads, model := runGrads(t, c, rand.New(rand.NewPCG(5, 6)))
		return grads, countOp(model, ortgraph.OpSwiGLUGrad)
	}
	for _, swap := range []bool{false, true} {
		ref, _ := run(gradCase{name: "float", opset: 21, ins: ins(), build: swiGLU(ortgraph.Float, swap), fused: true})
		for _, fused := range []bool{false, true} {
			got, nodes := run(gradCase{name: "float16", opset: 21, ins: ins(), build: swiGLU(ortgraph.Float16, swap), fused: fused})
			if want := map[bool]int{false: 0, true: 1}[fused]; nodes != want {
				t.Errorf("swap %v, fused %v: %d SwiGLUGrad nodes, want %d", swap, fused, nodes, want)
			}
			for _, v := range []string{"g", "u"} {
				if rel := maxRelErr(got[v], ref[v]); rel > 2e-3 {
					t.Errorf("swap %v, fused %v: d/d%s float16 vs float32: max rel err %.3g > 2e-3", swap, fused, v, rel)
				}
			}
		}
	}
}

// countOp counts the nodes of ortq's op in a serialized model.
func countOp(model []byte, op string) int {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		panic(err)
	}
	n := 0
	for _, node := range m.Graph.Node {
		if node.Domain == ortgraph.OrtqDomain && node.OpType == op {
			n++
		}
	}
	return n
}
