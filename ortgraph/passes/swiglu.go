package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// SwiGLUForward writes the MLP's gated activation h = silu(g)·u as one SwiGLU node of ortq's
// domain (package kernels: one kernel reading g and u), where ONNX Runtime runs two (its
// QuickGelu fusion of g·σ(g), then the Mul by u). It applies where nothing reads σ(g) or
// silu(g) but the pattern itself: a backward pass with autodiff.Options.FusedKernels reads g
// and u only (SwiGLUGrad). prepare runs it last on every training graph with
// --fused-kernels.
//
// Pattern: Mul(Mul(g, Sigmoid(g)), u), the operands of either Mul in either order. Check: g
// and u are float16 of one known shape, and σ(g) and silu(g) have no reader but the
// pattern and are no graph outputs. Rewrite: one SwiGLU(g, u) writing h; the Sigmoid and
// the inner Mul go.
var SwiGLUForward = &ortgraph.Pass{
	Name:       "swiglu-forward",
	Doc:        "Mul(g·σ(g), u) in float16 → one ai.ortq.SwiGLU(g, u)",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runSwiGLUForward,
}

func runSwiGLUForward(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	r := newSoleReaders(g, g.Consumers())
	var gone []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		silu, sig, gate, up := swiGLUMatch(g, n)
		if silu == nil {
			continue
		}
		if why := swiGLUCheck(g, r, silu, sig, gate, up); why != "" {
			res.Skipped = append(res.Skipped, fmt.Sprintf("Mul %q: %s", n.Name, why))
			continue
		}
		n.OpType, n.Domain, n.Input = ortgraph.OpSwiGLU, ortgraph.OrtqDomain, []string{gate, up}
		gone = append(gone, silu, sig)
		res.Fused++
	}
	res.finish(ctx, "swiglu-forward", "SwiGLU activations written as one node", gone, ortgraph.OrtqDomain)
	return res, nil
}

// swiGLUMatch returns, when n is Mul(Mul(g, Sigmoid(g)), u) in any operand order, the inner
// Mul, the Sigmoid, g and u (nil otherwise).
func swiGLUMatch(g *ortgraph.Graph, n *onnxpb.NodeProto) (silu, sig *onnxpb.NodeProto, gate, up string) {
	if !isOp(n, "Mul") || len(n.Input) != 2 {
		return nil, nil, "", ""
	}
	for a := range 2 {
		p := g.Producer(n.Input[a])
		if !isOp(p, "Mul") || len(p.Input) != 2 {
			continue
		}
		for s := range 2 {
			q := g.Producer(p.Input[s])
			if isOp(q, "Sigmoid") && q.Input[0] == p.Input[1-s] {
				return p, q, p.Input[1-s], n.Input[1-a]
			}
		}
	}
	return nil, nil, "", ""
}

// swiGLUCheck is "" where the match can become one SwiGLU node, else why not.
func swiGLUCheck(g *ortgraph.Graph, r soleReaders, silu, sig *onnxpb.NodeProto, gate, up string) string {
	if g.ElemType(gate) != ortgraph.Float16 || g.ElemType(up) != ortgraph.Float16 {
		return "g and u are not float16"
	}
	if dg, du := g.SymDims(gate), g.SymDims(up); !knownShape(dg, du) {
		return fmt.Sprintf("g %v and u %v are not of one known shape", dg, du)
	}
	for _, v := range []string{sig.Output[0], silu.Output[0]} {
		if _, only := r.single(v); !only || r.outputs[v] {
			return fmt.Sprintf("%q has other readers (a backward pass without SwiGLUGrad reads it)", v)
		}
	}
	return ""
}
