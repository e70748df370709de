package passes

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// GroupedKV removes the copies of grouped-query attention's key and value heads: instead of
// repeating each of the kv heads rep times and multiplying [batch, heads, seq, ·] tensors, it
// multiplies the query side regrouped as [batch, kv, rep·seq, ·] with the kv heads themselves.
//
// Why: transformers' repeat_kv materializes K and V at the query heads' count (an Expand
// kernel each, twice per layer with recomputation), and their gradients sum the copies back
// (a Split and a Sum each). The regrouped products are the same dot products, read from one
// copy: head h = g·rep + r of the query side meets kv head g, which is how repeat_kv orders
// its copies; a Reshape between [batch, heads, seq, x] and [batch, kv, rep·seq, x] moves no
// data.
//
// Pattern (`ortq import`/`synth` spell transformers' repeat_kv node for node):
//
//	kr = Reshape(Expand(Unsqueeze(x, [2]), [1, 1, rep, 1, 1]), [0, kv·rep, −1, d or 0])
//
// with x [batch, kv, seq, d] (kv static), read only by MatMuls as their right operand, either
// kr itself (P·V) or Transpose(kr, perm [0, 1, 3, 2]) (Q·Kᵀ), whose left operands are
// [batch, kv·rep, ·, ·]. Checks (a failing one leaves the match as it is and says why in the
// log): the Expand's shape is constant and repeats axis 2 only; the Reshape's target is
// constant as above; every reader is such a MatMul. Rewrite: each MatMul(A, kr or kr's
// Transpose) becomes Reshape(MatMul(Reshape(A, [0, kv, −1, 0]), x or Transpose(x)),
// [0, kv·rep, −1, 0]) under the MatMul's name with "/grouped" (and its scope metadata, so
// the recompute pass puts the nodes in the MatMul's layer); a Mul by a scalar constant (or a Div
// by one) that alone reads the product moves inside the Reshape back, where ONNX Runtime
// still folds it into the MatMul (measured: behind the Reshape it ran as its own kernel,
// 0.23 ms per layer at the 3B shape); the repeat chain is pruned.
var GroupedKV = &ortgraph.Pass{
	Name:       "grouped-kv",
	Doc:        "grouped-query attention's repeated K/V heads (Unsqueeze/Expand/Reshape) → products over the kv heads themselves",
	ResultType: reflect.TypeFor[*GroupedKVResult](),
	Run:        runGroupedKV,
}

// GroupedKVResult says what the GroupedKV pass did (Fused counts repeated K/V values).
type GroupedKVResult = FusionResult

// repeatKV is one repeated K or V value and the MatMuls that read it.
type repeatKV struct {
	kr          string // the repeated value [batch, kv·rep, seq, d]
	x           string // the kv heads [batch, kv, seq, d]
	kv, heads   int64
	direct      []*onnxpb.NodeProto // MatMul(A, kr)
	transposed  []*onnxpb.NodeProto // MatMul(A, Transpose(kr, [0, 1, 3, 2]))
	transposeOf *onnxpb.NodeProto   // that Transpose, if any
}

func runGroupedKV(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &GroupedKVResult{}
	r := newSoleReaders(g, g.Consumers())
	var matches []*repeatKV
	for _, n := range g.P.Node {
		if !isOp(n, "Reshape") {
			continue
		}
		m, why := matchRepeatKV(g, r, n)
		switch {
		case m != nil:
			matches = append(matches, m)
		case why != "":
			res.Skipped = append(res.Skipped, fmt.Sprintf("Reshape %q: %s", n.Name, why))
		}
	}
	for _, m := range matches {
		var xt string
		if m.transposeOf != nil {
			xt = g.Add(ortgraph.NodeSpec{Op: "Transpose", Inputs: []string{m.x}, Attrs: []ortgraph.Attr{ortgraph.AInts("perm", 0, 1, 3, 2)},
				Name: m.transposeOf.Name + "/grouped"})[0]
			copyScope(g.Producer(xt), m.transposeOf)
		}
		for _, mm := range m.direct {
			regroup(g, r, mm, m, m.x)
		}
		for _, mm := range m.transposed {
			regroup(g, r, mm, m, xt)
		}
	}
	if len(matches) > 0 {
		if err := g.TopoSort(); err != nil {
			return nil, err
		}
		g.Prune()
	}
	res.Fused = len(matches)
	res.report(ctx, "grouped-kv", "repeated K/V values read as their kv heads")
	return res, nil
}

// regroup replaces MatMul(A, ·) by Reshape(MatMul(Reshape(A, [0, kv, −1, 0]), b), [0, heads,
// −1, 0]), with a scalar scale of the product kept next to it; the old MatMul is left for
// Prune.
func regroup(g *ortgraph.Graph, sole soleReaders, mm *onnxpb.NodeProto, m *repeatKV, b string) {
	a := mm.Input[0]
	ad := g.SymDims(a)
	a2 := g.Add(ortgraph.NodeSpec{Op: "Reshape", Inputs: []string{a, g.ConstI64(0, m.kv, -1, 0)}, Name: mm.Name + "/grouped_in"})[0]
	g.SetType(a2, ortgraph.SymTensorType(g.ElemType(a), []string{ad[0], fmt.Sprint(m.kv), timesDim(ad[2], m.heads/m.kv), ad[3]}))
	copyScope(g.Producer(a2), mm)
	p := g.Add(ortgraph.NodeSpec{Op: "MatMul", Inputs: []string{a2, b}, Name: mm.Name + "/grouped"})[0]
	copyScope(g.Producer(p), mm)
	last := mm.Output[0] // the value the Reshape back stands in for
	if sc := scaleOf(g, sole, last); sc != nil {
		// The scale moves before the Reshape back, next to the product, so that ONNX
		// Runtime still folds it into the MatMul (MatMulScaleFusion); behind a Reshape it
		// would run as its own kernel over [batch, heads, seq, seq].
		sc.Input[slices.Index(sc.Input, last)] = p
		g.SetType(sc.Output[0], g.Type(p))
		last = sc.Output[0]
		p = last
	}
	out := g.Add(ortgraph.NodeSpec{Op: "Reshape", Inputs: []string{p, g.ConstI64(0, m.heads, -1, 0)}, Name: mm.Name + "/grouped_out"})[0]
	g.SetType(out, g.Type(mm.Output[0]))
	copyScope(g.Producer(out), mm)
	g.ReplaceUses(last, out, g.Producer(out))
}

// scaleOf returns the sole reader of v when it is a Mul by a scalar constant or a Div of v
// by one (attention's 1/√d), else nil.
func scaleOf(g *ortgraph.Graph, sole soleReaders, v string) *onnxpb.NodeProto {
	n, ok := sole.single(v)
	if !ok || len(n.Input) != 2 || sole.outputs[n.Output[0]] || !(isOp(n, "Mul") || isOp(n, "Div") && n.Input[0] == v) {
		return nil
	}
	other := n.Input[0]
	if other == v {
		other = n.Input[1]
	}
	if c, ok := g.ConstFloats(other); !ok || len(c) != 1 {
		return nil
	}
	return n
}

// timesDim names a dimension r times d: a number when d is one, "d*r" when d is symbolic
// (so that the autodiff sees the regrouped products' shapes as equal, not as unknown).
func timesDim(d string, r int64) string {
	if n, err := strconv.ParseInt(d, 10, 64); err == nil {
		return strconv.FormatInt(n*r, 10)
	}
	if d == "?" {
		return d
	}
	return fmt.Sprintf("%s*%d", d, r)
}

// matchRepeatKV matches the repeat chain ending in Reshape r. It returns (nil, "") when r
// does not end one and (nil, reason) when it does but cannot be rewritten.
func matchRepeatKV(g *ortgraph.Graph, sole soleReaders, r *onnxpb.NodeProto) (*repeatKV, string) {
	ex := g.Producer(r.Input[0])
	if !isOp(ex, "Expand") {
		return nil, ""
	}
	un := g.Producer(ex.Input[0])
	if !isOp(un, "Unsqueeze") || len(un.Input) != 2 {
		return nil, ""
	}
	if ax, ok := g.ConstInts(un.Input[1]); !ok || len(ax) != 1 || ax[0] != 2 {
		return nil, ""
	}
	x := un.Input[0]
	xd := g.Dims(x)
	if len(xd) != 4 || xd[1] <= 0 || xd[3] <= 0 {
		return nil, fmt.Sprintf("repeated value of shape %v: want [batch, kv, seq, d] with kv and d static", g.SymDims(x))
	}
	kv, d := xd[1], xd[3]
	shape, ok := g.ConstInts(ex.Input[1])
	if !ok || len(shape) != 5 || shape[0] != 1 || shape[1] != 1 || shape[2] < 2 || shape[3] != 1 || shape[4] != 1 {
		return nil, "the Expand's shape is not a constant [1, 1, rep, 1, 1]"
	}
	heads := kv * shape[2]
	to, ok := g.ConstInts(r.Input[1])
	if !ok || len(to) != 4 || to[0] != 0 || to[1] != heads || to[2] != -1 || (to[3] != d && to[3] != 0) || ortgraph.AttrInt(r, "allowzero", 0) != 0 {
		return nil, fmt.Sprintf("the Reshape's target is not a constant [0, %d, -1, %d]", heads, d)
	}
	for _, v := range []string{un.Output[0], ex.Output[0]} {
		if _, ok := sole.single(v); !ok {
			return nil, "the repeat chain is read outside it"
		}
	}
	if sole.outputs[r.Output[0]] {
		return nil, "the repeated value is a graph output"
	}
	m := &repeatKV{kr: r.Output[0], x: x, kv: kv, heads: heads}
	for _, c := range sole.cons[m.kr] {
		switch {
		case isOp(c, "MatMul") && c.Input[1] == m.kr && c.Input[0] != m.kr:
			m.direct = append(m.direct, c)
		case isTranspose(c, 0, 1, 3, 2) && m.transposeOf == nil && !sole.outputs[c.Output[0]]:
			m.transposeOf = c
			for _, t := range sole.cons[c.Output[0]] {
				if !isOp(t, "MatMul") || t.Input[1] != c.Output[0] || t.Input[0] == c.Output[0] {
					return nil, fmt.Sprintf("the transposed repeat is read by %s %q, not as a MatMul's right operand", t.OpType, t.Name)
				}
				m.transposed = append(m.transposed, t)
			}
		default:
			return nil, fmt.Sprintf("the repeated value is read by %s %q, not as a MatMul's right operand", c.OpType, c.Name)
		}
	}
	if len(m.direct)+len(m.transposed) == 0 {
		return nil, "the repeated value is read by no MatMul"
	}
	for _, mm := range append(m.direct[:len(m.direct):len(m.direct)], m.transposed...) {
		if ad := g.Dims(mm.Input[0]); len(ad) != 4 || ad[1] != heads {
			return nil, fmt.Sprintf("MatMul %q's left operand has shape %v, want [batch, %d, ·, ·]", mm.Name, g.SymDims(mm.Input[0]), heads)
		}
		if sole.outputs[mm.Output[0]] {
			return nil, fmt.Sprintf("MatMul %q's product is a graph output (its name would change)", mm.Name)
		}
	}
	return m, ""
}
