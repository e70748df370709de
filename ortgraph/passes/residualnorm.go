package passes

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// ResidualNorm fuses each residual Add that feeds an RMSNorm into one
// com.microsoft.SkipSimplifiedLayerNormalization, which adds, normalises and writes the sum
// (for the residual stream's other readers) in one kernel: one read of the two addends and
// no separate pass over the sum. ONNX Runtime's own SkipLayerNormFusion does not do it here:
// it takes LayerNormalization only, and only an Add read by the norm alone.
//
// Pattern: SimplifiedLayerNormalization(Add(a, b), w) over the last axis, a and b of one
// 3-D shape. Check: the norm's inv_std_var output is read by nobody (CUDA's kernel does not
// write it), so it applies where the backward pass reads recomputed norms: the recomputing
// training graphs' first forward, where prepare runs it (--fuse-residual-norm). Rewrite:
// the norm node becomes SkipSimplifiedLayerNormalization(a, b, w) writing y and, when the
// Add's output has other readers, the sum under the Add's output name; the Add goes.
var ResidualNorm = &ortgraph.Pass{
	Name:       "residual-norm",
	Doc:        "residual Add + RMSNorm whose inv_std_var nobody reads → one com.microsoft.SkipSimplifiedLayerNormalization",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runResidualNorm,
}

func runResidualNorm(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	r := newSoleReaders(g, g.Consumers())
	read := func(v string) bool { return v != "" && (len(r.cons[v]) > 0 || r.outputs[v]) } // by a node or the graph's caller
	var gone []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		if !isOp(n, "SimplifiedLayerNormalization") || n.Domain != "" {
			continue
		}
		add := g.Producer(n.Input[0])
		if !isOp(add, "Add") || len(add.Input) != 2 || len(n.Output) > 1 && read(n.Output[1]) {
			continue // not a residual norm, or the backward pass's own (it reads inv_std_var)
		}
		if why := residualNormCheck(g, n, add); why != "" {
			res.Skipped = append(res.Skipped, fmt.Sprintf("norm %q: %s", n.Name, why))
			continue
		}
		sum := ""
		if _, only := r.single(add.Output[0]); !only {
			sum = add.Output[0] // the residual stream's other readers
		}
		n.OpType, n.Domain = "SkipSimplifiedLayerNormalization", "com.microsoft"
		n.Input = []string{add.Input[0], add.Input[1], n.Input[1]}
		n.Output = []string{n.Output[0], "", "", sum}
		n.Attribute = []*onnxpb.AttributeProto{ortgraph.AFloat("epsilon", ortgraph.AttrFloat(n, "epsilon", 1e-5))}
		gone = append(gone, add)
		res.Fused++
	}
	res.finish(ctx, "residual-norm", "residual Adds fused into their RMSNorm", gone, "com.microsoft")
	if res.Fused == 0 {
		return res, nil
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	return res, nil
}

// residualNormCheck is "" where norm n of add's sum can become one fused node, else why not.
func residualNormCheck(g *ortgraph.Graph, n, add *onnxpb.NodeProto) string {
	if len(n.Output) > 2 {
		return "it has more than two outputs"
	}
	if ax := ortgraph.AttrInt(n, "axis", -1); ax != -1 && ax != 2 {
		return fmt.Sprintf("axis %d is not the last", ax)
	}
	da, db := g.SymDims(add.Input[0]), g.SymDims(add.Input[1])
	if len(da) != 3 || !slices.Equal(da, db) {
		return fmt.Sprintf("the Add's operands %v and %v are not of one 3-D shape", da, db)
	}
	return ""
}
