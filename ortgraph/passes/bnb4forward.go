package passes

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Bnb4Forward turns a device step's NF4/FP4 forward products com.microsoft.MatMulBnb4(x, B,
// absmax) into com.microsoft.FusedMatMul(x, W, transB = 1), W [N, K] dequantized in the graph
// from the same bytes (autodiff.Bnb4Weight: the code table gathered by the bytes, times each
// block's absmax, the double-quantized absmax dequantized again), gated on x so that it runs
// when the product does and lives only until it. prepare runs it with --dequantize-forward.
//
// Why: ONNX Runtime's CUDA MatMulBnb4 copies its 16-entry code table from the host stack on
// every run, which a captured CUDA graph replays after the stack has moved on (CaptureBlockers),
// so a step with MatMulBnb4 runs uncaptured; without it the step is captured, at the cost of
// a dequantization kernel chain per forward product instead of MatMulBnb4's fused one.
//
// Pattern: a com.microsoft MatMulBnb4 node. Check: Bnb4Weight can rebuild its weight (the
// bytes an initializer, N·K a multiple of an even block size, a known quant_type), else it is
// left with the reason. Rewrite: the node becomes the FusedMatMul in place (same name and
// output); absmax chains nothing reads any more are pruned.
//
// With recomputation, a recomputed product (Recompute's "recompute/" clone) runs in the
// backward pass just before its Linear's dx = dy·W, which dequantizes the same bytes again;
// dx then reads the clone's W instead (one dequantization fewer per Linear and micro-batch,
// as Recompute does for int4), which lives until dx, within its layer's backward pass. The
// first forward's W is never shared: it would live through the whole step.
var Bnb4Forward = &ortgraph.Pass{
	Name:       "bnb4-forward",
	Doc:        "NF4/FP4 forward products as FusedMatMul(transB) over W dequantized in the graph (no MatMulBnb4: capturable)",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runBnb4Forward,
}

func runBnb4Forward(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	recomputed := map[string]string{} // 4-bit bytes → the recomputed product's W
	for _, n := range append([]*onnxpb.NodeProto(nil), g.P.Node...) {
		if n.Domain != "com.microsoft" || n.OpType != "MatMulBnb4" || len(n.Input) != 3 {
			continue
		}
		dt := bnb4Type(g, n.Input[2])
		if dt == 0 {
			res.Skipped = append(res.Skipped, fmt.Sprintf("MatMulBnb4 %q: the type of its absmax %q is unknown", n.Name, n.Input[2]))
			continue
		}
		w, err := autodiff.Bnb4Weight(g, n, autodiff.Bnb4Gate(g, n.Input[0]), dt)
		if err != nil {
			res.Skipped = append(res.Skipped, err.Error())
			continue
		}
		if strings.HasPrefix(n.Name, "recompute/") {
			recomputed[n.Input[1]] = w
		}
		n.OpType, n.Input = "FusedMatMul", []string{n.Input[0], w}
		n.Attribute = []*onnxpb.AttributeProto{ortgraph.AInt("transB", 1)}
		res.Fused++
	}
	shared := shareRecomputedBnb4(g, recomputed)
	res.report(ctx, "bnb4-forward", "MatMulBnb4 products as FusedMatMul over W dequantized in the graph")
	if shared > 0 {
		ctx.Logf("bnb4-forward: %d dx products read their recomputed product's W", shared)
	}
	if res.Fused == 0 {
		return res, nil
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	g.Prune()
	return res, nil
}

// shareRecomputedBnb4 points every dx product MatMul(dy, W) whose W dequantizes bytes that a
// recomputed product also dequantized (recomputed: bytes → that W) at the recomputed W, and
// returns how many it redirected (autodiff.Bnb4WeightBytes recognises the dx chain).
func shareRecomputedBnb4(g *ortgraph.Graph, recomputed map[string]string) int {
	if len(recomputed) == 0 {
		return 0
	}
	n := 0
	for _, mm := range g.P.Node {
		if !isOp(mm, "MatMul") || len(mm.Input) != 2 {
			continue
		}
		if w, ok := recomputed[autodiff.Bnb4WeightBytes(g, mm.Input[1])]; ok && w != mm.Input[1] {
			mm.Input[1] = w
			n++
		}
	}
	return n
}

// bnb4Type is the float type of a MatMulBnb4 absmax input (an initializer, or the
// double-quantized chain's output, whose type Bnb4Absmax records); 0 when unknown.
func bnb4Type(g *ortgraph.Graph, absmax string) int32 {
	if t := g.Initializer(absmax); t != nil {
		return t.DataType
	}
	if t := g.Type(absmax); t != nil && t.GetTensorType() != nil {
		return t.GetTensorType().ElemType
	}
	return 0
}
