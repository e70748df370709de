package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Bnb4Kernel writes each float16 NF4/FP4 dequantization chain that a step runs
// (autodiff.Bnb4Weight: the gated bytes cast to int32, a Gather of the [256, 2] code table,
// the product by each block's absmax, two Reshapes) as one DequantBnb4 node of ortq's domain
// (package kernels: a table lookup a byte, 16-byte stores), where ONNX Runtime runs a kernel
// for each step of the chain and moves about 23 bytes for every stored byte. prepare runs it
// last on every training graph with --bnb4-kernel.
//
// Pattern: Reshape(Mul(Reshape(Gather(lut, Cast(Where(gate, B, B), to int32)), [blocks, bs]),
// Reshape(absmax, [blocks, 1])), [N, K]) (autodiff.MatchBnb4Chain, with lut a [256, 2] and B
// an initializer). Checks: the Cast is to int32; lut, absmax and the result are float16; the
// result's shape [N, K] is known; every value inside the chain is read only by it. The dense steps' chains (DenseBase: no gate, folded into an
// initializer when ONNX Runtime loads the step) are not matched: a custom node would stop the
// folding. Rewrite: the last Reshape becomes DequantBnb4(Where's output, lut, absmax) with
// attributes N and K; the rest of the chain goes.
var Bnb4Kernel = &ortgraph.Pass{
	Name:       "bnb4-kernel",
	Doc:        "float16 NF4/FP4 dequantization chains (Cast, Gather, Mul, Reshapes) → one ai.ortq.DequantBnb4",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runBnb4Kernel,
}

func runBnb4Kernel(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	r := newSoleReaders(g, g.Consumers())
	var gone []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		if !isOp(n, "Reshape") {
			continue
		}
		c := autodiff.MatchBnb4Chain(g, n.Output[0])
		if c == nil {
			continue
		}
		abs := g.Producer(c.Mul.Input[1]) // Reshape(absmax, [blocks, 1])
		d := g.Dims(n.Output[0])
		if why := bnb4KernelCheck(g, r, c, abs, d); why != "" {
			res.Skipped = append(res.Skipped, fmt.Sprintf("Reshape %q: %s", n.Name, why))
			continue
		}
		n.OpType, n.Domain, n.Input = ortgraph.OpDequantBnb4, ortgraph.OrtqDomain, []string{c.Gate.Output[0], c.Gather.Input[0], abs.Input[0]}
		n.Attribute = []*onnxpb.AttributeProto{ortgraph.AInt("N", d[0]), ortgraph.AInt("K", d[1])}
		gone = append(gone, c.Mul, c.Blocks, c.Gather, c.Cast, abs)
		res.Fused++
	}
	res.finish(ctx, "bnb4-kernel", "4-bit dequantization chains written as ai.ortq.DequantBnb4", gone, ortgraph.OrtqDomain)
	return res, nil
}

// bnb4KernelCheck is "" where chain c, its absmax Reshape abs and its result of shape d can
// become one DequantBnb4 node writing [N, K], else why not.
func bnb4KernelCheck(g *ortgraph.Graph, r soleReaders, c *autodiff.Bnb4Chain, abs *onnxpb.NodeProto, d []int64) string {
	if !isOp(abs, "Reshape") {
		return "the absmax is not reshaped to a column"
	}
	if ortgraph.AttrInt(c.Cast, "to", 0) != int64(onnxpb.TensorProto_INT32) {
		return "the bytes are not cast to int32"
	}
	if lut := g.Initializer(c.Gather.Input[0]); lut.DataType != ortgraph.Float16 {
		return fmt.Sprintf("the table %q is not float16", c.Gather.Input[0])
	}
	if g.ElemType(abs.Input[0]) != ortgraph.Float16 || g.ElemType(c.Out.Output[0]) != ortgraph.Float16 {
		return "the absmax or the weight is not float16"
	}
	if len(d) != 2 || d[0] <= 0 || d[1] <= 0 {
		return fmt.Sprintf("the weight's shape %v is not a known [N, K]", d)
	}
	for _, n := range []*onnxpb.NodeProto{c.Mul, c.Blocks, c.Gather, c.Cast, abs} {
		if _, only := r.single(n.Output[0]); !only {
			return fmt.Sprintf("%q is read outside the chain", n.Output[0])
		}
	}
	return ""
}
