package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// RMSNormKernel writes each float16 SimplifiedLayerNormalization over the last axis with
// float32 statistics as one RMSNorm node of ortq's domain (package kernels: one block a row,
// 8 elements a thread and step), where ONNX Runtime's kernel reads one element a thread
// (measured on an H100, 3B shape, micro-batch 7: 46 µs a norm over [3584, 3072], a third of
// the memory bandwidth). In a training graph these are the recomputed norms: the first
// forward's are SkipSimplifiedLayerNormalization (ResidualNorm), left as they are.
//
// Pattern: SimplifiedLayerNormalization(x, scale) of the default domain. Checks: x and scale
// are float16; axis −1 (or x's last, where its rank is known); stash_type 1; no bias.
// Rewrite: the node in place, epsilon kept, with a second output (the float32 inv_std_var
// RMSNorm always writes) named where the node had none.
var RMSNormKernel = &ortgraph.Pass{
	Name:       "rmsnorm-kernel",
	Doc:        "float16 SimplifiedLayerNormalization (last axis, float32 statistics) → one ai.ortq.RMSNorm",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runRMSNormKernel,
}

func runRMSNormKernel(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	for _, n := range g.P.Node {
		if !isOp(n, "SimplifiedLayerNormalization") {
			continue
		}
		if why := rmsNormKernelCheck(g, n); why != "" {
			res.Skipped = append(res.Skipped, fmt.Sprintf("SimplifiedLayerNormalization %q: %s", n.Name, why))
			continue
		}
		var attrs []*onnxpb.AttributeProto
		for _, a := range n.Attribute {
			if a.Name == "epsilon" {
				attrs = append(attrs, a)
			}
		}
		n.OpType, n.Domain, n.Attribute = ortgraph.OpRMSNorm, ortgraph.OrtqDomain, attrs
		if len(n.Output) < 2 || n.Output[1] == "" {
			n.Output = []string{n.Output[0], g.Fresh(n.Output[0] + "_inv_rms")}
		}
		res.Fused++
	}
	res.finish(ctx, "rmsnorm-kernel", "RMSNorms written as ai.ortq.RMSNorm", nil, ortgraph.OrtqDomain)
	return res, nil
}

// rmsNormKernelCheck is "" where n can become one RMSNorm node, else why not.
func rmsNormKernelCheck(g *ortgraph.Graph, n *onnxpb.NodeProto) string {
	if len(n.Input) != 2 {
		return "a bias input"
	}
	if g.ElemType(n.Input[0]) != ortgraph.Float16 || g.ElemType(n.Input[1]) != ortgraph.Float16 {
		return "x or scale is not float16"
	}
	if ortgraph.AttrInt(n, "stash_type", 1) != 1 {
		return "statistics not in float32 (stash_type)"
	}
	if ax := ortgraph.AttrInt(n, "axis", -1); ax != -1 && ax != int64(g.Rank(n.Input[0]))-1 {
		return fmt.Sprintf("axis %d is not the last", ax)
	}
	return ""
}

// NormGradSum folds a sum of two gradients, one of them an RMSNormGrad's dx read by nothing
// else, into that RMSNormGrad (its optional fifth input, res): the residual stream's gradient
// Sum, one kernel over [tokens, hidden] a norm (H100, 3B shape: 26 µs), goes, and the sum is
// taken in float32 inside the kernel before dx's rounding.
//
// Pattern: Sum(a, b) or Add(a, b) with a or b the output of a four-input ai.ortq.RMSNormGrad.
// Checks: that output has no other reader and is no graph output; the other operand has the
// same element type and known shape as it (no broadcast). Rewrite: the RMSNormGrad takes the
// other operand as res and writes the sum's output; the sum goes.
var NormGradSum = &ortgraph.Pass{
	Name:       "norm-grad-sum",
	Doc:        "Sum(res, RMSNormGrad(x, w, r, dy)) → RMSNormGrad(x, w, r, dy, res)",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runNormGradSum,
}

func runNormGradSum(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	r := newSoleReaders(g, g.Consumers())
	var gone []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		if (!isOp(n, "Sum") && !isOp(n, "Add")) || len(n.Input) != 2 {
			continue
		}
		var whys []string
		for a := range 2 {
			ng := g.Producer(n.Input[a])
			if ng == nil || ng.Domain != ortgraph.OrtqDomain || ng.OpType != ortgraph.OpRMSNormGrad || len(ng.Input) != 4 {
				continue
			}
			if why := normGradSumCheck(g, r, ng, n.Input[1-a]); why != "" {
				whys = append(whys, why)
				continue
			}
			ng.Input = append(ng.Input, n.Input[1-a])
			ng.Output[0] = n.Output[0]
			gone = append(gone, n)
			res.Fused++
			whys = nil
			break
		}
		for _, why := range whys {
			res.Skipped = append(res.Skipped, fmt.Sprintf("%s %q: %s", n.OpType, n.Name, why))
		}
	}
	res.finish(ctx, "norm-grad-sum", "gradient sums folded into RMSNormGrad", gone, ortgraph.OrtqDomain)
	return res, nil
}

// normGradSumCheck is "" where other can be RMSNormGrad ng's res, else why not.
func normGradSumCheck(g *ortgraph.Graph, r soleReaders, ng *onnxpb.NodeProto, other string) string {
	dx := ng.Output[0]
	if _, only := r.single(dx); !only {
		return fmt.Sprintf("%q has other readers", dx)
	}
	if g.ElemType(other) != g.ElemType(dx) {
		return fmt.Sprintf("%q is not of dx's type", other)
	}
	if dd, od := g.SymDims(dx), g.SymDims(other); !knownShape(dd, od) {
		return fmt.Sprintf("%q %v and dx %v are not of one known shape", other, od, dd)
	}
	return ""
}
