package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Rotary replaces the decomposed rotary embedding, x·cos + rotate_half(x)·sin, with one
// opset-23 RotaryEmbedding node (its cos/sin caches [1 or batch, seq, d/2], no position_ids;
// ORTCompat expands them to x's batch, which ONNX Runtime's kernel needs).
//
// Why: decomposed, each of q and k costs seven kernels in the forward pass (two Slices, Neg,
// Concat, two broadcast Muls, Add), seven more where the layer is recomputed and about as
// many in the backward pass, all over [batch, heads, seq, head_dim]; RotaryEmbedding is one
// kernel each way, and its gradient is the same op with sin negated (autodiff's rule).
//
// Pattern (`ortq import`/`synth --ops decomposed` and the stock dynamo export, transformers'
// eager code node for node):
//
//	f   = frequencies [seq, d/2] or [batch, seq, d/2]        (position × inv_freq)
//	cos = [Unsqueeze(·, [1])]([Cast](Cos(Concat(f, f, axis −1))));  sin likewise with Sin
//	y   = Add(Mul(x, cos), Mul(Concat(Neg(Slice(x, d/2:d)), Slice(x, 0:d/2), axis −1), sin))
//
// with x of rank 4 ([batch, heads, seq, d], d static and even), operands of Mul and Add in
// either order. Checks (a failing one leaves the match as it is and says why in the log): the
// rotate_half values are read only inside the pattern, the Slices cut the last axis at d/2,
// cos and sin come from the same f, whose halves the Concat duplicates. Rewrite: the Add
// becomes RotaryEmbedding(x, cos_cache, sin_cache) in place (same name, output and metadata,
// so the recompute pass puts it in the Add's layer); the caches are [Cast](Cos/Sin(f)),
// unsqueezed to [1, seq, d/2] when f is 2-D, shared by every match over the same f; the graph's
// default-domain opset becomes 23 (and its IR version 11) when it was lower.
var Rotary = &ortgraph.Pass{
	Name:       "rotary",
	Doc:        "decomposed rotary embedding (Slice/Neg/Concat/Mul/Add) → one opset-23 RotaryEmbedding",
	ResultType: reflect.TypeFor[*RotaryResult](),
	Run:        runRotary,
}

// RotaryResult says what the Rotary pass did.
type RotaryResult = FusionResult

// rotaryMatch is one decomposed rotary embedding.
type rotaryMatch struct {
	add     *onnxpb.NodeProto // y = Add(...); rewritten in place
	x       string
	freq    string // f, [seq, d/2] or [batch, seq, d/2]
	cast    int32  // element type of the caches (cos/sin after their optional Cast)
	castCos bool   // whether cos/sin carry a Cast
}

func runRotary(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &RotaryResult{}
	r := newSoleReaders(g, g.Consumers())
	var matches []*rotaryMatch
	for _, n := range g.P.Node {
		if n.OpType != "Add" || n.Domain != "" || len(n.Input) != 2 {
			continue
		}
		m, why := matchRotary(g, r, n)
		switch {
		case m != nil:
			matches = append(matches, m)
		case why != "":
			res.Skipped = append(res.Skipped, fmt.Sprintf("Add %q: %s", n.Name, why))
		}
	}
	if len(matches) > 0 {
		if g.M.OpsetVersion("") < 23 {
			g.M.SetOpset("", 23)
		}
		if g.M.P.IrVersion < 11 {
			g.M.P.IrVersion = 11
		}
		caches := map[string][2]string{}
		for _, m := range matches {
			c, ok := caches[m.freq]
			if !ok {
				c = rotaryCaches(g, m)
				caches[m.freq] = c
			}
			typ := g.Type(m.add.Output[0])
			m.add.OpType, m.add.Domain = "RotaryEmbedding", ""
			m.add.Input = []string{m.x, c[0], c[1]}
			m.add.Attribute = nil
			if typ == nil {
				typ = g.Type(m.x)
			}
			g.SetType(m.add.Output[0], typ)
		}
		// The caches were appended after their readers: sort before pruning, which walks
		// the node list backwards from the outputs.
		if err := g.TopoSort(); err != nil {
			return nil, err
		}
		g.Prune()
	}
	res.Fused = len(matches)
	res.report(ctx, "rotary", "rotary embeddings as RotaryEmbedding")
	return res, nil
}

// rotaryCaches builds the cos and sin caches [1 or batch, seq, d/2] from a match's
// frequencies.
func rotaryCaches(g *ortgraph.Graph, m *rotaryMatch) [2]string {
	var out [2]string
	for i, op := range []string{"Cos", "Sin"} {
		v := g.Op(op, []string{m.freq})
		if m.castCos {
			v = g.Op("Cast", []string{v}, ortgraph.AInt("to", int64(m.cast)))
		}
		if g.Rank(m.freq) == 2 {
			v = g.Op("Unsqueeze", []string{v, g.ConstI64(0)})
		}
		d := g.SymDims(m.freq)
		if len(d) == 2 {
			d = append([]string{"1"}, d...)
		}
		if len(d) == 3 {
			g.SetType(v, ortgraph.SymTensorType(m.cast, d))
		}
		out[i] = v
	}
	return out
}

// matchRotary matches the pattern ending in Add n. It returns (nil, "") when n is not the
// sum of a rotary embedding and (nil, reason) when it is one that cannot be fused.
func matchRotary(g *ortgraph.Graph, sole soleReaders, add *onnxpb.NodeProto) (*rotaryMatch, string) {
	for swap := range 2 {
		m1, m2 := g.Producer(add.Input[swap]), g.Producer(add.Input[1-swap])
		if !isOp(m1, "Mul") || !isOp(m2, "Mul") {
			continue
		}
		for r := range 2 {
			rot := g.Producer(m2.Input[r])
			if !isOp(rot, "Concat") || len(rot.Input) != 2 {
				continue
			}
			x, half, why := rotateHalf(g, rot)
			if x == "" {
				if why != "" {
					return nil, why
				}
				continue
			}
			sin := m2.Input[1-r]
			var cos string
			switch x {
			case m1.Input[0]:
				cos = m1.Input[1]
			case m1.Input[1]:
				cos = m1.Input[0]
			default:
				return nil, "the cos product does not multiply the rotated value"
			}
			freqCos, castC, tc := trigOfDuplicated(g, cos, "Cos")
			freqSin, castS, ts := trigOfDuplicated(g, sin, "Sin")
			if freqCos == "" || freqSin == "" || freqCos != freqSin || castC != castS || tc != ts {
				return nil, "cos and sin are not Cos/Sin of one Concat(f, f) of frequencies"
			}
			if d := g.Dims(freqCos); len(d) < 2 || len(d) > 3 || d[len(d)-1] != half {
				return nil, fmt.Sprintf("frequencies of shape %v, want [seq, %d] or [batch, seq, %d]", g.SymDims(freqCos), half, half)
			}
			if tc == 0 {
				tc = g.ElemType(x) // Cos/Sin of untyped frequencies: the Mul makes them x's type
			}
			if tc == 0 || tc != g.ElemType(x) {
				return nil, "the caches' element type is unknown or differs from the rotated value's"
			}
			neg := g.Producer(rot.Input[0])
			inner := []*onnxpb.NodeProto{rot, neg, g.Producer(rot.Input[1]), g.Producer(neg.Input[0])}
			for _, n := range []*onnxpb.NodeProto{m1, m2} {
				if _, ok := sole.single(n.Output[0]); !ok {
					return nil, fmt.Sprintf("Mul %q is read outside the rotary embedding", n.Name)
				}
			}
			readers := append(inner[:len(inner):len(inner)], m2)
			for _, n := range inner {
				if !sole.onlyBy(n.Output[0], readers) {
					return nil, fmt.Sprintf("%s %q is read outside the rotary embedding", n.OpType, n.Name)
				}
			}
			return &rotaryMatch{add: add, x: x, freq: freqCos, cast: tc, castCos: castC}, ""
		}
	}
	return nil, ""
}

// rotateHalf matches Concat(Neg(Slice(x, h:2h)), Slice(x, 0:h)) on the last axis of a rank-4
// x whose last dimension is 2h, and returns x and h.
func rotateHalf(g *ortgraph.Graph, c *onnxpb.NodeProto) (x string, h int64, why string) {
	neg := g.Producer(c.Input[0])
	lo := g.Producer(c.Input[1])
	if !isOp(neg, "Neg") || !isOp(lo, "Slice") {
		return "", 0, ""
	}
	hi := g.Producer(neg.Input[0])
	if !isOp(hi, "Slice") || hi.Input[0] != lo.Input[0] {
		return "", 0, ""
	}
	x = lo.Input[0]
	d := g.Dims(x)
	if len(d) != 4 || d[3] <= 0 || d[3]%2 != 0 {
		return "", 0, fmt.Sprintf("rotated value of shape %v: want rank 4 with a static even last dimension", g.SymDims(x))
	}
	if ax := ortgraph.AttrInt(c, "axis", 0); ax != -1 && ax != 3 {
		return "", 0, "the Concat is not over the last axis"
	}
	h = d[3] / 2
	if !sliceOfLast(g, lo, 0, h, 2*h) || !sliceOfLast(g, hi, h, 2*h, 2*h) {
		return "", 0, "the Slices do not cut the last axis at its half"
	}
	return x, h, ""
}

// sliceOfLast reports whether s is Slice(x, [start], [end], [last axis]) with unit steps,
// where x's last dimension is dim (negative and past-the-end bounds as ONNX clamps them).
func sliceOfLast(g *ortgraph.Graph, s *onnxpb.NodeProto, start, end, dim int64) bool {
	if len(s.Input) < 4 {
		return false
	}
	st, ok1 := g.ConstInts(s.Input[1])
	en, ok2 := g.ConstInts(s.Input[2])
	ax, ok3 := g.ConstInts(s.Input[3])
	if !ok1 || !ok2 || !ok3 || len(st) != 1 || len(en) != 1 || len(ax) != 1 || (ax[0] != 3 && ax[0] != -1) {
		return false
	}
	if len(s.Input) > 4 && s.Input[4] != "" {
		if steps, ok := g.ConstInts(s.Input[4]); !ok || len(steps) != 1 || steps[0] != 1 {
			return false
		}
	}
	clamp := func(v int64) int64 {
		if v < 0 {
			v += dim
		}
		return max(0, min(v, dim))
	}
	return clamp(st[0]) == start && clamp(en[0]) == end
}

// trigOfDuplicated matches v = [Unsqueeze(·, [1])]([Cast](op(Concat(f, f, axis −1)))) and
// returns f, whether there is a Cast, and the element type after it. The Unsqueeze is the
// stock exporter's: its f is [batch, seq, d/2] and cos/sin [batch, 1, seq, d].
func trigOfDuplicated(g *ortgraph.Graph, v, op string) (f string, cast bool, typ int32) {
	typ = g.ElemType(v)
	n := g.Producer(v)
	if isOp(n, "Unsqueeze") && len(n.Input) == 2 {
		if ax, ok := g.ConstInts(n.Input[1]); !ok || len(ax) != 1 || ax[0] != 1 {
			return "", false, 0
		}
		n = g.Producer(n.Input[0])
	}
	if isOp(n, "Cast") {
		cast = true
		n = g.Producer(n.Input[0])
	}
	if !isOp(n, op) {
		return "", false, 0
	}
	c := g.Producer(n.Input[0])
	if !isOp(c, "Concat") || len(c.Input) != 2 || c.Input[0] != c.Input[1] {
		return "", false, 0
	}
	if ax := ortgraph.AttrInt(c, "axis", 0); ax != -1 && int(ax) != g.Rank(c.Input[0])-1 {
		return "", false, 0
	}
	return c.Input[0], cast, typ
}

func isOp(n *onnxpb.NodeProto, op string) bool {
	return n != nil && n.OpType == op && n.Domain == ""
}
