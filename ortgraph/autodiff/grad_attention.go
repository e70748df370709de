package autodiff

import (
	"fmt"
	"math"
	"strconv"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Attention (opset 23): Y = softmax(Q·Kᵀ·scale + bias)·V with GQA head sharing ⇒ the
// gradient of the same computation written in primitive ops (MatMul, Softmax, Where, ...):
// the rule re-emits the forward in those ops (recomputing the probabilities, as fused
// attention kernels do in their backward) and differentiates that expansion.
func gradAttention(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	for i := 3; i < len(need); i++ {
		if need[i] {
			return nil, fmt.Errorf("Attention input %d (mask or KV cache) has no gradient", i)
		}
	}
	for i := 4; i < len(n.Input); i++ {
		if n.Input[i] != "" {
			return nil, fmt.Errorf("Attention with a KV cache or nonpad_kv_seqlen input is not supported for training")
		}
	}
	for j := 1; j < len(dy); j++ {
		if dy[j] != "" {
			return nil, fmt.Errorf("Attention output %d carries a gradient; only the first output is differentiable here", j)
		}
	}
	if ortgraph.AttrFloat(n, "softcap", 0) != 0 {
		return nil, fmt.Errorf("Attention with softcap is not supported for training")
	}
	mark := len(b.P.Node)
	y, err := b.attentionExpansion(n)
	if err != nil {
		return nil, err
	}
	ins := []string{n.Input[0], n.Input[1], n.Input[2]}
	got, err := b.expand(mark, map[string]string{y: dy[0]}, ins)
	if err != nil {
		return nil, err
	}
	g := grads(n)
	for i := 0; i < 3; i++ {
		if need[i] {
			if got[i] == "" {
				return nil, fmt.Errorf("Attention expansion gave no gradient for input %d", i)
			}
			g[i] = got[i]
		}
	}
	return g, nil
}

// rankType records a value's element type and rank (dims unknown) so rules downstream
// can reason about axes.
func (b *Builder) rankType(v string, dt int32, rank int) string {
	d := make([]string, rank)
	for i := range d {
		d[i] = "?"
	}
	if dt != 0 {
		b.SetType(v, ortgraph.SymTensorType(dt, d))
	}
	return v
}

func (b *Builder) symType(v string, dt int32, dims ...string) string {
	for _, d := range dims {
		if d == "" {
			return b.rankType(v, dt, len(dims))
		}
	}
	b.SetType(v, ortgraph.SymTensorType(dt, dims))
	return v
}

// attentionExpansion emits Attention's forward in primitive ops and returns Y.
func (b *Builder) attentionExpansion(n *onnxpb.NodeProto) (string, error) {
	q := n.Input[0]
	dt := b.ElemType(q)
	rq := b.Rank(q)
	if rq != 3 && rq != 4 {
		return "", fmt.Errorf("Attention needs Q of known rank 3 or 4 (got %d)", rq)
	}
	if rq == 3 && (ortgraph.AttrInt(n, "q_num_heads", 0) <= 0 || ortgraph.AttrInt(n, "kv_num_heads", 0) <= 0) {
		return "", fmt.Errorf("3-D Attention inputs need q_num_heads and kv_num_heads")
	}
	q4, kr, vr, qs, ks, vs := b.attentionHeads(n, dt, rq)
	s, sd := b.attentionScores(n, dt, q4, kr, qs, ks)
	p := b.symType(b.Op("Softmax", []string{s}, ortgraph.AInt("axis", -1)), dt, sd...)
	y := b.symType(b.Op("MatMul", []string{p, vr}), dt, qs[0], qs[1], qs[2], vs[3])
	if rq == 3 {
		t := b.rankType(b.Op("Transpose", []string{y}, ortgraph.AInts("perm", 0, 2, 1, 3)), dt, 4)
		y = b.rankType(b.Op("Reshape", []string{t, b.ConstI64(0, 0, -1)}), dt, 3)
	}
	return y, nil
}

// attentionHeads brings Q, K and V to [batch, heads, seq, d] (from 3-D inputs by their head
// counts) and repeats each K/V head G = Hq/Hkv times (GQA); it returns Q, the repeated K and
// V, and the symbolic dims of Q, K and V ("" each when unknown).
func (b *Builder) attentionHeads(n *onnxpb.NodeProto, dt int32, rq int) (q4, kr, vr string, qs, ks, vs []string) {
	to4 := func(x, heads string) string {
		if rq == 4 {
			return x
		}
		h := ortgraph.AttrInt(n, heads, 0)
		r := b.rankType(b.Op("Reshape", []string{x, b.ConstI64(0, 0, h, -1)}), dt, 4)
		return b.rankType(b.Op("Transpose", []string{r}, ortgraph.AInts("perm", 0, 2, 1, 3)), dt, 4)
	}
	q4, k4, v4 := to4(n.Input[0], "q_num_heads"), to4(n.Input[1], "kv_num_heads"), to4(n.Input[2], "kv_num_heads")
	kr, vr = b.repeatKV(q4, k4, dt), b.repeatKV(q4, v4, dt)
	qs, ks, vs = b.SymDims(q4), b.SymDims(k4), b.SymDims(v4)
	if len(qs) != 4 || len(ks) != 4 || len(vs) != 4 {
		return q4, kr, vr, []string{"", "", "", ""}, []string{"", "", "", ""}, []string{"", "", "", ""}
	}
	if kr != k4 {
		b.symType(kr, dt, ks[0], qs[1], ks[2], ks[3])
		b.symType(vr, dt, vs[0], qs[1], vs[2], vs[3])
		b.typeRepeat(q4, kr, k4, ks, dt)
		b.typeRepeat(q4, vr, v4, vs, dt)
	}
	return q4, kr, vr, qs, ks, vs
}

// repeatKV repeats each head of x [batch, kv, seq, d] G = Hq/Hkv times (unsqueeze, expand,
// merge), or returns x when it has as many heads as q4.
func (b *Builder) repeatKV(q4, x string, dt int32) string {
	if qd, xd := b.Dims(q4), b.Dims(x); qd != nil && xd != nil && qd[1] > 0 && qd[1] == xd[1] {
		return x
	}
	shx := b.Op("Shape", []string{x})
	hq := b.Op("Slice", []string{b.Op("Shape", []string{q4}), b.ConstI64(1), b.ConstI64(2)})
	bh := b.Op("Slice", []string{shx, b.ConstI64(0), b.ConstI64(2)})
	ld := b.Op("Slice", []string{shx, b.ConstI64(2), b.ConstI64(4)})
	hkv := b.Op("Slice", []string{shx, b.ConstI64(1), b.ConstI64(2)})
	grp := b.Op("Div", []string{hq, hkv})
	u := b.rankType(b.Op("Unsqueeze", []string{x, b.ConstI64(2)}), dt, 5)
	e := b.rankType(b.Op("Expand", []string{u, b.Op("Concat", []string{bh, grp, ld}, ortgraph.AInt("axis", 0))}), dt, 5)
	bsz := b.Op("Slice", []string{shx, b.ConstI64(0), b.ConstI64(1)})
	return b.rankType(b.Op("Reshape", []string{e, b.Op("Concat", []string{bsz, hq, ld}, ortgraph.AInt("axis", 0))}), dt, 4)
}

// typeRepeat records the types of the Unsqueeze and Expand inside repeatKV's chain r of src.
func (b *Builder) typeRepeat(q4, r, src string, d []string, dt int32) {
	e := b.Producer(r).Input[0]
	u := b.Producer(e).Input[0]
	grp := "?"
	if qd, xd := b.Dims(q4), b.Dims(src); qd != nil && xd != nil && qd[1] > 0 && xd[1] > 0 {
		grp = strconv.FormatInt(qd[1]/xd[1], 10)
	}
	b.symType(u, dt, d[0], d[1], "1", d[2], d[3])
	b.symType(e, dt, d[0], d[1], grp, d[2], d[3])
}

// attentionScores emits S = Q·Kᵀ·scale with the mask (additive, or boolean through Where)
// and the causal lower triangle applied; it returns S and its symbolic dims.
func (b *Builder) attentionScores(n *onnxpb.NodeProto, dt int32, q4, kr string, qs, ks []string) (string, []string) {
	kt := b.symType(b.Op("Transpose", []string{kr}, ortgraph.AInts("perm", 0, 1, 3, 2)), dt, ks[0], qs[1], ks[3], ks[2])
	sd := []string{qs[0], qs[1], qs[2], ks[2]}
	s := b.symType(b.Op("MatMul", []string{q4, kt}), dt, sd...)
	var scale string
	if ortgraph.HasAttr(n, "scale") {
		scale = b.ConstLike(ortgraph.AttrFloat(n, "scale", 1), q4)
	} else if qd := b.Dims(q4); qd != nil && qd[3] > 0 {
		scale = b.ConstLike(float32(1/math.Sqrt(float64(qd[3]))), q4)
	} else {
		d := b.Op("Slice", []string{b.Op("Shape", []string{q4}), b.ConstI64(3), b.ConstI64(4)})
		scale = b.Op("Reciprocal", []string{b.Op("Sqrt", []string{b.castLikeV(d, q4)})})
	}
	s = b.symType(b.Op("Mul", []string{s, scale}), dt, sd...)
	lowest := b.ConstLike(-65504, q4) // the most negative fp16; softmax weight 0 in any float type
	if dt == ortgraph.Float || dt == ortgraph.Double {
		lowest = b.ConstLike(-3.4e38, q4)
	}
	if m := in(n, 3); m != "" {
		if b.ElemType(m) == ortgraph.Bool {
			s = b.symType(b.Op("Where", []string{m, s, lowest}), dt, sd...)
		} else {
			s = b.symType(b.Op("Add", []string{s, m}), dt, sd...)
		}
	}
	if ortgraph.AttrInt(n, "is_causal", 0) != 0 {
		shs := b.Op("Shape", []string{s})
		sq := b.Op("Slice", []string{shs, b.ConstI64(2), b.ConstI64(4)})
		ones := b.Op("ConstantOfShape", []string{sq}, ortgraph.ATensor("value", ortgraph.BytesTensor("t", ortgraph.Bool, []int64{1}, []byte{1})))
		// Query i sees keys j ≤ i + (L − Sq): the lower triangle with offset L − Sq.
		off := b.Op("Sub", []string{b.Op("Slice", []string{shs, b.ConstI64(3), b.ConstI64(4)}), b.Op("Slice", []string{shs, b.ConstI64(2), b.ConstI64(3)})})
		tri := b.Op("Trilu", []string{b.Op("Cast", []string{ones}, ortgraph.AInt("to", int64(ortgraph.Int64))), b.Op("Reshape", []string{off, b.ConstI64()})},
			ortgraph.AInt("upper", 0))
		mask := b.Op("Cast", []string{tri}, ortgraph.AInt("to", int64(ortgraph.Bool)))
		s = b.rankType(b.Op("Where", []string{mask, s, lowest}), dt, 4)
	}
	return s, sd
}

// RotaryEmbedding (opset 23): y = R(θ)·x, a rotation of each pair of channels by the
// position's angle ⇒ dx = R(θ)ᵀ·dy = R(−θ)·dy, i.e. the same op with sin negated
// (cos(−θ) = cos θ, sin(−θ) = −sin θ); channels beyond rotary_embedding_dim pass through.
func gradRotaryEmbedding(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	for i := 1; i < len(need); i++ {
		if need[i] {
			return nil, fmt.Errorf("RotaryEmbedding input %d (cos/sin cache or positions) has no gradient", i)
		}
	}
	ins := append([]string(nil), n.Input...)
	ins[0] = dy[0]
	ins[2] = b.Op("Neg", []string{n.Input[2]})
	g[0] = b.Add(ortgraph.NodeSpec{Op: "RotaryEmbedding", Inputs: ins, Attrs: n.Attribute})[0]
	// Type inference does not cover RotaryEmbedding; its output has its input's type, so
	// the gradient (a rotation of dy) has x's.
	if t := b.Type(n.Input[0]); t != nil {
		b.SetType(g[0], t)
	}
	return g, nil
}
