package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// MaskedSoftmax writes attention's masked softmax, Softmax(Add(S, M)) over the last axis of
// float16 [batch, heads, q, L] scores, as one MaskedSoftmax node of ortq's domain (package
// kernels: one warp a row, the mask added in float32), where ONNX Runtime runs a
// broadcasting Add and a Softmax, each a pass over the scores (measured on an H100, 3B shape,
// micro-batch 7: 0.11 + 0.09 ms a layer; MaskedSoftmax 0.08 ms). prepare runs it last on every
// training graph with --attention-kernels: it rewrites the recomputed probabilities the
// backward pass reads.
//
// Pattern: Softmax(Add(S, M)) with the operands of Add in either order. Checks: S and M are
// float16 of rank 4 with known dims; M's last dim is S's and each of its first three is 1 or
// S's; the Softmax is over the last axis; the sum has no reader but the Softmax and is no
// graph output. Rewrite: the Softmax becomes MaskedSoftmax(S, M) in place; the Add goes.
var MaskedSoftmax = &ortgraph.Pass{
	Name:       "masked-softmax",
	Doc:        "float16 Softmax(Add(S, M)) over [batch, heads, q, L] → one ai.ortq.MaskedSoftmax(S, M)",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runMaskedSoftmax,
}

func runMaskedSoftmax(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	r := newSoleReaders(g, g.Consumers())
	var gone []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		if !isOp(n, "Softmax") {
			continue
		}
		add := g.Producer(n.Input[0])
		if !isOp(add, "Add") || len(add.Input) != 2 {
			continue
		}
		s, m, why := maskedSoftmaxCheck(g, r, n, add)
		if why != "" {
			res.Skipped = append(res.Skipped, fmt.Sprintf("Softmax %q: %s", n.Name, why))
			continue
		}
		n.OpType, n.Domain, n.Input, n.Attribute = ortgraph.OpMaskedSoftmax, ortgraph.OrtqDomain, []string{s, m}, nil
		gone = append(gone, add)
		res.Fused++
	}
	res.finish(ctx, "masked-softmax", "masked softmaxes written as ai.ortq.MaskedSoftmax", gone, ortgraph.OrtqDomain)
	return res, nil
}

// maskedSoftmaxCheck returns the scores and the mask of Softmax n over Add add, or why the
// pair cannot become one MaskedSoftmax node.
func maskedSoftmaxCheck(g *ortgraph.Graph, r soleReaders, n, add *onnxpb.NodeProto) (s, m, why string) {
	if ax := ortgraph.AttrInt(n, "axis", -1); ax != -1 && ax != 3 || g.M.OpsetVersion("") < 13 {
		return "", "", "not over the last axis (axis attribute, or an opset before 13)"
	}
	if _, only := r.single(add.Output[0]); !only {
		return "", "", fmt.Sprintf("the sum %q has other readers", add.Output[0])
	}
	for a := range 2 {
		s, m = add.Input[a], add.Input[1-a]
		if g.ElemType(s) != ortgraph.Float16 || g.ElemType(m) != ortgraph.Float16 {
			return "", "", "the scores or the mask are not float16"
		}
		if broadcastsTo(g.SymDims(m), g.SymDims(s)) {
			return s, m, ""
		}
	}
	return "", "", fmt.Sprintf("%v and %v are not scores [batch, heads, q, L] and a mask broadcast to them over the first three axes",
		g.SymDims(add.Input[0]), g.SymDims(add.Input[1]))
}

// broadcastsTo reports whether mask dims m reach score dims s (both rank 4, known) by
// broadcasting over the first three axes only.
func broadcastsTo(m, s []string) bool {
	if len(m) != 4 || len(s) != 4 {
		return false
	}
	for k := range 4 {
		if !knownDim(s[k]) || !knownDim(m[k]) || m[k] != s[k] && (k == 3 || m[k] != "1") {
			return false
		}
	}
	return true
}
