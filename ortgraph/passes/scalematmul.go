package passes

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// ScaleMatMul folds a multiplication by a scalar constant into the GEMMs that read its
// product: y = Mul(x, c) read only by MatMuls (or FusedMatMuls) becomes their alpha, so the
// pass over y goes. The backward pass writes this where one scaled gradient feeds two GEMMs
// (attention's dS·scale feeds dQ and dK, a [batch, heads, seq, seq] tensor), which ONNX
// Runtime's MatMulScaleFusion leaves alone: it takes a Mul with one reader only.
//
// Pattern: Mul(x, c) with c a one-element float or float16 constant. Check: x is a GEMM's
// (MatMul or FusedMatMul) product read by the Mul alone — the recomputed attention scores,
// whose scaled product a Shape of the backward pass reads too, so MatMulScaleFusion skips
// it — or every reader of the Mul's product is a GEMM reading it once; neither x nor the
// product is a graph output. Rewrite: that GEMM becomes com.microsoft.FusedMatMul with
// alpha·c writing the product, or each reader does, reading x (FusedMatMul's other
// attributes kept); the Mul goes. prepare runs it last on every training graph (on the
// device steps after DenseBase and NBitsForward, whose patterns read plain MatMuls).
var ScaleMatMul = &ortgraph.Pass{
	Name:       "scale-matmul",
	Doc:        "Mul(x, scalar) read only by MatMuls → their FusedMatMul alpha",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runScaleMatMul,
}

func runScaleMatMul(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	r := newSoleReaders(g, g.Consumers())
	var gone []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		x, c, ok := scalarMul(g, n)
		if !ok {
			continue
		}
		if p := g.Producer(x); isGEMM(p) && !r.outputs[x] && len(r.cons[x]) == 1 {
			scaleGEMM(p, c) // the GEMM writes the product itself
			p.Output[0] = n.Output[0]
		} else if why := scaleMatMulCheck(r, n.Output[0]); why == "" {
			for _, m := range r.cons[n.Output[0]] {
				scaleGEMM(m, c)
				m.Input[slices.Index(m.Input, n.Output[0])] = x
			}
		} else {
			res.Skipped = append(res.Skipped, fmt.Sprintf("Mul %q: %s", n.Name, why))
			continue
		}
		gone = append(gone, n)
		res.Fused++
	}
	res.finish(ctx, "scale-matmul", "scalar Muls folded into their GEMMs' alpha", gone, "com.microsoft")
	return res, nil
}

// scalarMul returns x and c when n is Mul(x, c) or Mul(c, x) with c a one-element float
// constant of type float or float16.
func scalarMul(g *ortgraph.Graph, n *onnxpb.NodeProto) (x string, c float32, ok bool) {
	if !isOp(n, "Mul") || len(n.Input) != 2 {
		return "", 0, false
	}
	for i := range 2 {
		v, isConst := g.ConstFloats(n.Input[i])
		// Mul's operands share one type: the constant's is x's.
		if dt := g.ElemType(n.Input[i]); isConst && len(v) == 1 && (dt == ortgraph.Float || dt == ortgraph.Float16) {
			return n.Input[1-i], v[0], true
		}
	}
	return "", 0, false
}

// isGEMM reports whether m is a MatMul or a com.microsoft.FusedMatMul.
func isGEMM(m *onnxpb.NodeProto) bool {
	return isOp(m, "MatMul") || m != nil && m.OpType == "FusedMatMul" && m.Domain == "com.microsoft"
}

// scaleGEMM makes GEMM m a FusedMatMul with its alpha multiplied by c.
func scaleGEMM(m *onnxpb.NodeProto, c float32) {
	alpha := ortgraph.AttrFloat(m, "alpha", 1)
	m.OpType, m.Domain = "FusedMatMul", "com.microsoft"
	m.Attribute = slices.DeleteFunc(m.Attribute, func(a *onnxpb.AttributeProto) bool { return a.Name == "alpha" })
	m.Attribute = append(m.Attribute, ortgraph.AFloat("alpha", alpha*c))
}

// scaleMatMulCheck is "" where product y can go into its readers' alpha, else why not.
func scaleMatMulCheck(r soleReaders, y string) string {
	if r.outputs[y] {
		return "its product is a graph output"
	}
	cons := r.cons[y]
	if len(cons) == 0 {
		return "nothing reads it"
	}
	for _, m := range cons {
		switch {
		case !isGEMM(m):
			return fmt.Sprintf("%s %q reads it", m.OpType, m.Name)
		case len(m.Input) != 2 || m.Input[0] == m.Input[1]:
			return fmt.Sprintf("%s %q reads it twice", m.OpType, m.Name)
		}
	}
	return ""
}
