package passes

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// RMSNorm replaces the decomposed LlamaRMSNorm with one SimplifiedLayerNormalization node
// (ONNX Runtime's RMSNorm kernel; ONNX Runtime registers it in the default domain, opset 1,
// outputs Y and inv_std_var).
//
// Why: the exporters write RMSNorm as [Cast to float32,] Pow(x, 2), ReduceMean over the last
// axis, Add ε, Sqrt, Reciprocal, Mul by x, [Cast back,] Mul by the weight. On ORT CUDA that
// is nine kernels over the activation (ReduceMean goes through cuDNN's slow reduction;
// measured about 2 ms of 9.6 ms per Llama-3.2-3B layer with its backward and recompute).
// SimplifiedLayerNormalization is one kernel; it reads the half-precision input directly
// and computes in float32 (stash_type 1), which is what the Casts spelled; in float16 it
// rounds once, after the weight, where LlamaRMSNorm rounds x·r before it (one half ulp
// apart at most). Its inv_std_var output ([.., 1] float32) is emitted so the backward
// (autodiff's rule) reads r = (mean(x²)+ε)^-½ instead of recomputing it; not for double
// inputs, whose ORT 1.29 CPU kernel writes it as float whatever its declared type.
//
// Pattern (both the stock dynamo export and `ortq import`/`synth --ops decomposed`):
//
//	xs = x | Cast(x, float32)            (Cast only from float16)
//	r  = Reciprocal(Sqrt(Add(ReduceMean(Pow(xs, 2) | Mul(xs, xs), [-1], keepdims 1), ε)))
//	y  = Mul(w, [Cast](Mul(xs, r)))      (or the Cast after the weight Mul; operands in either order)
//
// with w a 1-D weight of the hidden size, y of x's element type and w of y's. Checks (a
// failing one leaves the match as it is and says why in the log): the intermediate values
// are read only inside the pattern, the reduction is over the last axis with keepdims,
// ε is a one-element constant, the exponent is 2, the types line up. Rewrite: the final
// node becomes the SimplifiedLayerNormalization in place — it keeps its name, output and
// metadata, so the recompute pass assigns it the layer it gave the weight Mul (synth/import
// names carry "layers.N/": each layer's norms are recomputed) — and the other nodes of the
// match are removed (the input Cast only when nothing else reads it).
//
// The opset-23 RMSNormalization (the stock exporter at opset 23, `--ops fused`) over the last
// axis becomes a SimplifiedLayerNormalization too: the same function, and the backward
// reads the saved inv_std_var instead of recomputing the statistics.
var RMSNorm = &ortgraph.Pass{
	Name:       "rmsnorm",
	Doc:        "decomposed RMSNorm (Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul, with or without Casts) → one SimplifiedLayerNormalization",
	ResultType: reflect.TypeFor[*RMSNormResult](),
	Run:        runRMSNorm,
}

// RMSNormResult says what the RMSNorm pass did.
type RMSNormResult = FusionResult

// rmsMatch is one decomposed RMSNorm found in the graph.
type rmsMatch struct {
	x, w    string
	eps     float32
	final   *onnxpb.NodeProto   // the node whose output is y; rewritten in place
	inner   []*onnxpb.NodeProto // removed
	inCast  *onnxpb.NodeProto   // Cast(x) → float32, or nil
	outType int32
}

func runRMSNorm(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &RMSNormResult{}
	cons := g.Consumers()
	r := newSoleReaders(g, cons)
	var matches []*rmsMatch
	for _, n := range g.P.Node {
		if n.OpType == "RMSNormalization" && n.Domain == "" {
			if m, why := matchRMSNormalization(g, n); m != nil {
				matches = append(matches, m)
			} else {
				res.Skipped = append(res.Skipped, fmt.Sprintf("RMSNormalization %q: %s", n.Name, why))
			}
			continue
		}
		if n.OpType != "ReduceMean" || n.Domain != "" {
			continue
		}
		m, why := matchRMSNorm(g, r, n)
		switch {
		case m != nil:
			matches = append(matches, m)
		case why != "":
			res.Skipped = append(res.Skipped, fmt.Sprintf("ReduceMean %q: %s", n.Name, why))
		}
	}
	remove := map[*onnxpb.NodeProto]bool{}
	for _, m := range matches {
		for _, n := range m.inner {
			remove[n] = true
		}
		if m.inCast != nil && onlyReadBy(cons[m.inCast.Output[0]], m.inner) {
			remove[m.inCast] = true
		}
		rewriteRMSNorm(g, m)
	}
	if len(remove) > 0 {
		dead := map[string]bool{}
		kept := g.P.Node[:0]
		for _, n := range g.P.Node {
			if remove[n] {
				for _, o := range n.Output {
					dead[o] = true
				}
				continue
			}
			kept = append(kept, n)
		}
		g.P.Node = kept
		vis := g.P.ValueInfo[:0]
		for _, vi := range g.P.ValueInfo {
			if !dead[vi.Name] {
				vis = append(vis, vi)
			}
		}
		g.P.ValueInfo = vis
		g.Reindex()
		// Unused constants of the match (ε, the exponent, the axes) go with Prune's next run.
	}
	res.Fused = len(matches)
	res.report(ctx, "rmsnorm", "RMSNorms as SimplifiedLayerNormalization")
	return res, nil
}

// matchRMSNorm matches the pattern around a ReduceMean. It returns (nil, "") when the
// ReduceMean is not a mean of squares (not an RMSNorm at all) and (nil, reason) when it is
// one that cannot be fused.
func matchRMSNorm(g *ortgraph.Graph, r soleReaders, rm *onnxpb.NodeProto) (*rmsMatch, string) {
	sq, xs := meanOfSquares(g, rm)
	if sq == nil {
		return nil, ""
	}
	// From here on it is a mean of squares: failures say why.
	if why := lastAxisMean(g, rm, xs); why != "" {
		return nil, why
	}
	m, why := matchRMSCore(g, r, sq, rm, xs)
	if m == nil {
		return nil, why
	}
	xType, why := rmsInputType(g, m)
	if why != "" {
		return nil, why
	}
	if why := matchRMSTail(g, r, m, xType); why != "" {
		return nil, why
	}
	if m.outType != xType {
		return nil, fmt.Sprintf("output type %s differs from the input's %s", ortgraph.DTypeName(m.outType), ortgraph.DTypeName(xType))
	}
	if wt := g.ElemType(m.w); wt != xType {
		return nil, fmt.Sprintf("weight %q is %s and the activations %s (fusing would round the weight)", m.w, ortgraph.DTypeName(wt), ortgraph.DTypeName(xType))
	}
	return m, ""
}

// meanOfSquares returns the node squaring x (Pow(x, 2) or Mul(x, x)) that the ReduceMean
// reads, and x; nil when the ReduceMean reads anything else.
func meanOfSquares(g *ortgraph.Graph, rm *onnxpb.NodeProto) (*onnxpb.NodeProto, string) {
	sq := g.Producer(rm.Input[0])
	if sq == nil || sq.Domain != "" {
		return nil, ""
	}
	switch {
	case sq.OpType == "Pow" && len(sq.Input) == 2:
		if v, ok := g.ConstFloats(sq.Input[1]); !ok || len(v) != 1 || v[0] != 2 {
			return nil, ""
		}
		return sq, sq.Input[0]
	case sq.OpType == "Mul" && len(sq.Input) == 2 && sq.Input[0] == sq.Input[1]:
		return sq, sq.Input[0]
	}
	return nil, ""
}

// lastAxisMean says why the ReduceMean is not a keepdims mean over x's last axis alone
// ("" when it is).
func lastAxisMean(g *ortgraph.Graph, rm *onnxpb.NodeProto, xs string) string {
	if ortgraph.AttrInt(rm, "keepdims", 1) != 1 {
		return "keepdims 0"
	}
	axes, ok := ortgraph.AttrInts(rm, "axes")
	if !ok && len(rm.Input) > 1 {
		axes, ok = g.ConstInts(rm.Input[1])
	}
	rank := g.Rank(xs)
	if !ok || len(axes) != 1 || !(axes[0] == -1 || (rank > 0 && axes[0] == int64(rank-1))) {
		return fmt.Sprintf("reduces over axes %v, not the last axis alone", axes)
	}
	return ""
}

// matchRMSCore matches x·Reciprocal(Sqrt(mean(x²) + ε)), each step read by the next alone.
func matchRMSCore(g *ortgraph.Graph, r soleReaders, sq, rm *onnxpb.NodeProto, xs string) (*rmsMatch, string) {
	if !r.onlyBy(sq.Output[0], []*onnxpb.NodeProto{rm}) {
		return nil, "x² is read outside the norm"
	}
	add, ok := r.single(rm.Output[0])
	if !ok || add.OpType != "Add" || add.Domain != "" {
		return nil, "mean(x²) is not read by one Add"
	}
	epsV := add.Input[1]
	if epsV == rm.Output[0] {
		epsV = add.Input[0]
	}
	eps, ok := g.ConstFloats(epsV)
	if !ok || len(eps) != 1 {
		return nil, "ε is not a one-element constant"
	}
	sqrt, ok := r.single(add.Output[0])
	if !ok || sqrt.OpType != "Sqrt" || sqrt.Domain != "" {
		return nil, "mean(x²)+ε is not read by one Sqrt"
	}
	rec, ok := r.single(sqrt.Output[0])
	if !ok || rec.OpType != "Reciprocal" || rec.Domain != "" {
		return nil, "the Sqrt is not read by one Reciprocal"
	}
	norm, ok := r.single(rec.Output[0])
	if !ok || norm.OpType != "Mul" || norm.Domain != "" || !sameSet(norm.Input, xs, rec.Output[0]) {
		return nil, "the reciprocal root is not read by one Mul with x"
	}
	return &rmsMatch{eps: eps[0], x: xs, inner: []*onnxpb.NodeProto{sq, rm, add, sqrt, rec, norm}}, ""
}

// rmsInputType takes the input through an optional Cast from float16 to float32 (m.inCast)
// and returns its element type, or why the kernels cannot take it.
func rmsInputType(g *ortgraph.Graph, m *rmsMatch) (int32, string) {
	xType := g.ElemType(m.x)
	if p := g.Producer(m.x); p != nil && p.OpType == "Cast" && p.Domain == "" {
		from := g.ElemType(p.Input[0])
		if ortgraph.AttrInt(p, "to", 0) == int64(ortgraph.Float) && from == ortgraph.Float16 {
			m.inCast, m.x, xType = p, p.Input[0], from
		}
	}
	switch xType {
	case ortgraph.Float, ortgraph.Float16, ortgraph.Double:
		return xType, ""
	case 0:
		return 0, fmt.Sprintf("the element type of %q is not recorded", m.x)
	}
	// BFloat16 has a CUDA kernel but no CPU one in ORT 1.29.
	return 0, fmt.Sprintf("input type %s: SimplifiedLayerNormalization kernels take float, float16 and double", ortgraph.DTypeName(xType))
}

// matchRMSTail matches the tail after x·r: [Cast] Mul(w, ·) [Cast], with one Cast back to
// x's type where the input was cast to float32 and none otherwise; it records the weight,
// the final node (rewritten, not removed) and its output type in m.
func matchRMSTail(g *ortgraph.Graph, r soleReaders, m *rmsMatch, xType int32) string {
	cur, castBack := m.inner[len(m.inner)-1], m.inCast != nil
	var wMul *onnxpb.NodeProto
	for step := 0; step < 3; step++ {
		next, ok := r.single(cur.Output[0])
		if !ok || next.Domain != "" {
			break
		}
		if next.OpType == "Cast" && castBack && ortgraph.AttrInt(next, "to", 0) == int64(xType) {
			castBack = false
			m.inner = append(m.inner, next)
			cur = next
			continue
		}
		if next.OpType == "Mul" && wMul == nil && len(next.Input) == 2 {
			w := next.Input[0]
			if w == cur.Output[0] {
				w = next.Input[1]
			}
			if !isNormWeight(g, w, m.x) {
				break
			}
			wMul, m.w = next, w
			m.inner = append(m.inner, next)
			cur = next
			continue
		}
		break
	}
	if wMul == nil {
		return "x·r is not multiplied by a 1-D weight of the hidden size"
	}
	m.final = cur
	m.inner = m.inner[:len(m.inner)-1] // the final node is rewritten, not removed
	m.outType = g.ElemType(cur.Output[0])
	return ""
}

// matchRMSNormalization takes an opset-23 RMSNormalization over the last axis as it is:
// the same function (stash_type 1: float32 inside); only the backward gains from the
// saved inv_std_var.
func matchRMSNormalization(g *ortgraph.Graph, n *onnxpb.NodeProto) (*rmsMatch, string) {
	if len(n.Input) != 2 {
		return nil, "expected inputs X and scale"
	}
	x, w := n.Input[0], n.Input[1]
	rank := g.Rank(x)
	if axis := ortgraph.AttrInt(n, "axis", -1); axis != -1 && (rank < 0 || axis != int64(rank-1)) {
		return nil, fmt.Sprintf("axis %d: not the last axis alone", axis)
	}
	xt := g.ElemType(x)
	switch xt {
	case ortgraph.Float, ortgraph.Double:
	case ortgraph.Float16:
		if ortgraph.AttrInt(n, "stash_type", 1) != 1 {
			return nil, "float16 with stash_type 0 (half-precision statistics)"
		}
	default:
		return nil, fmt.Sprintf("input type %s: SimplifiedLayerNormalization kernels take float, float16 and double", ortgraph.DTypeName(xt))
	}
	if !isNormWeight(g, w, x) {
		return nil, "scale is not a 1-D weight of the hidden size"
	}
	if wt, yt := g.ElemType(w), g.ElemType(n.Output[0]); wt != xt || (yt != 0 && yt != xt) {
		return nil, "scale or output type differs from the input's"
	}
	return &rmsMatch{x: x, w: w, eps: ortgraph.AttrFloat(n, "epsilon", 1e-5), final: n, outType: xt}, ""
}

// rewriteRMSNorm turns m.final into the SimplifiedLayerNormalization node.
func rewriteRMSNorm(g *ortgraph.Graph, m *rmsMatch) {
	n := m.final
	n.OpType, n.Domain = "SimplifiedLayerNormalization", ""
	n.Input = []string{m.x, m.w}
	n.Attribute = []*onnxpb.AttributeProto{
		ortgraph.AInt("axis", -1),
		ortgraph.AFloat("epsilon", m.eps),
		ortgraph.AInt("stash_type", 1),
	}
	if m.outType == ortgraph.Double {
		// ORT 1.29's double CPU kernel writes inv_std_var as float whatever its declared
		// type (measured: "Tensor type mismatch"); the backward recomputes r instead.
		return
	}
	inv := g.Fresh(strings.TrimPrefix(n.Output[0], "/") + "_inv_std_var")
	n.Output = []string{n.Output[0], inv}
	if d := g.SymDims(m.x); d != nil {
		d[len(d)-1] = "1"
		g.SetType(inv, ortgraph.SymTensorType(ortgraph.Float, d))
	}
}

// isNormWeight reports whether w is a 1-D tensor as long as x's last dim (when known).
func isNormWeight(g *ortgraph.Graph, w, x string) bool {
	wd := g.Dims(w)
	if len(wd) != 1 {
		return false
	}
	xd := g.Dims(x)
	if len(xd) == 0 {
		return wd[0] > 0
	}
	h := xd[len(xd)-1]
	return h < 0 || wd[0] == h
}

// sameSet reports whether in holds exactly a and b (in either order).
func sameSet(in []string, a, b string) bool {
	return len(in) == 2 && ((in[0] == a && in[1] == b) || (in[0] == b && in[1] == a))
}
