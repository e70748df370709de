package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// AttentionForward turns each attention of a graph whose internals nothing else reads into
// one opset-23 Attention node: in a training graph whose backward pass reads recomputed
// copies of the attention (Recompute, layer or selective), the first forward's scores and
// probabilities are needed by nobody, and ONNX Runtime's Attention kernel can compute the
// output without writing them. prepare runs it on the recomputing training graphs with
// --attention-kernel attention (H100, 3B micro-batch 7: −0.4 % a step; the default is
// AttentionForwardMHA, −2.3 %).
//
// Pattern: Softmax(axis −1) of Add(S, mask), S = Mul(MatMul(q', kᵀ), c) with c a scalar
// constant, kᵀ = Transpose(k, perm [0, 1, 3, 2]); the probabilities P go through MatMul(P',
// v) to the output O; with grouped-query attention (GroupedKV) q' is Reshape(q, [0, kv, −1,
// 0]), S is reshaped back to [0, heads, −1, 0] before the Add, P' is P reshaped to the kv
// heads and O the product reshaped back. Check: every value between q, k, v, mask and O is
// read by the next node of the pattern alone (the backward pass reads none of them).
// Rewrite: O = Attention(q, k, v, mask, scale = c) (4-D inputs: [batch, heads, seq, head
// dim], k and v with the kv heads), made by the node that wrote O; the rest is pruned.
var AttentionForward = &ortgraph.Pass{
	Name:       "attention-forward",
	Doc:        "attention whose scores and probabilities nothing else reads → one opset-23 Attention",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run: func(ctx *ortgraph.Context) (any, error) {
		return runAttentionForward(ctx, "attention-forward", asAttention)
	},
}

// AttentionForwardMHA is AttentionForward with ONNX Runtime's com.microsoft.MultiHeadAttention
// as the kernel (what prepare runs on the recomputing training graphs by default), whose CUDA kernel
// computes an attention with an additive mask in one fused pass (on an H100, cuDNN's flash
// attention: 0.10 ms a layer at the 3B shape, micro-batch 7) where the opset-23 Attention
// kernel may not. Same pattern and check; rewrite:
// q to [batch, seq, heads·head dim], k and v likewise with each kv head repeated for its
// group of query heads (MultiHeadAttention takes as many kv heads as query heads),
// MultiHeadAttention(q, k, v, mask as attention_bias, num_heads, scale), and its output
// back to [batch, heads, seq, head dim] under O's name.
var AttentionForwardMHA = &ortgraph.Pass{
	Name:       "attention-forward-mha",
	Doc:        "attention whose scores and probabilities nothing else reads → one com.microsoft.MultiHeadAttention",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run: func(ctx *ortgraph.Context) (any, error) {
		return runAttentionForward(ctx, "attention-forward-mha", asMultiHeadAttention)
	},
}

// attentionMatch is one matched attention: its inputs, scale, and the pattern's nodes, last
// the one writing O.
type attentionMatch struct {
	q, k, v, mask string
	scale         float32
	nodes         []*onnxpb.NodeProto
}

// attentionRewrite turns a matched attention into its fused form, the node that wrote O
// becoming the one that writes it now; "" or the reason it cannot.
type attentionRewrite func(g *ortgraph.Graph, m *attentionMatch) string

func runAttentionForward(ctx *ortgraph.Context, pass string, rewrite attentionRewrite) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	r := newSoleReaders(g, g.Consumers())
	for _, sm := range append([]*onnxpb.NodeProto(nil), g.P.Node...) {
		if !isOp(sm, "Softmax") {
			continue
		}
		m, why := matchAttention(g, r, sm)
		if m != nil {
			why = rewrite(g, m)
		}
		if why != "" {
			res.Skipped = append(res.Skipped, fmt.Sprintf("Softmax %q: %s", sm.Name, why))
		}
		if m != nil && why == "" {
			res.Fused++
		}
	}
	res.report(ctx, pass, "attentions as one fused node")
	if res.Fused == 0 {
		return res, nil
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	g.Prune()
	return res, nil
}

// asAttention writes m as one opset-23 Attention node.
func asAttention(g *ortgraph.Graph, m *attentionMatch) string {
	last := m.nodes[len(m.nodes)-1]
	last.OpType, last.Domain = "Attention", ""
	last.Input = []string{m.q, m.k, m.v, m.mask}
	last.Attribute = []*onnxpb.AttributeProto{ortgraph.AFloat("scale", m.scale)}
	if g.M.OpsetVersion("") < 23 {
		g.M.SetOpset("", 23)
		if g.M.P.IrVersion < 11 {
			g.M.P.IrVersion = 11
		}
	}
	return ""
}

// asMultiHeadAttention writes m as com.microsoft.MultiHeadAttention on [batch, seq,
// heads·head dim] inputs, its output transposed back to O's [batch, heads, seq, head dim].
// Where an input is already a transposed [batch, seq, heads, head dim] value (seqMajor) or
// O's sole reader transposes it back, the pair of transposes is not written.
func asMultiHeadAttention(g *ortgraph.Graph, m *attentionMatch) string {
	qd, kd := g.Dims(m.q), g.Dims(m.k)
	if len(qd) != 4 || len(kd) != 4 || qd[1] <= 0 || kd[1] <= 0 || qd[3] <= 0 || qd[1]%kd[1] != 0 {
		return fmt.Sprintf("q %v and k %v need known head counts and head size", qd, kd)
	}
	if g.Rank(m.mask) != 4 {
		return fmt.Sprintf("mask %q has rank %d; MultiHeadAttention's attention_bias is 4-D", m.mask, g.Rank(m.mask))
	}
	heads, kvHeads, group, hd := qd[1], kd[1], qd[1]/kd[1], qd[3]
	readers := newSoleReaders(g, g.Consumers())
	flat := func(x string) string { return g.Op("Reshape", []string{x, g.ConstI64(0, 0, -1)}) }
	kv := func(x string) string { // [batch, kv, seq, hd] → [batch, seq, heads·hd], kv head j serving heads j·group …
		x = seqMajor(g, readers, x, kvHeads, hd)
		if group > 1 {
			x = g.Op("Expand", []string{g.Op("Unsqueeze", []string{x, g.ConstI64(3)}), g.ConstI64(1, 1, 1, group, 1)})
		}
		return flat(x)
	}
	o := g.Add(ortgraph.NodeSpec{Op: "MultiHeadAttention", Domain: "com.microsoft",
		Inputs: []string{flat(seqMajor(g, readers, m.q, heads, hd)), kv(m.k), kv(m.v), "", "", m.mask},
		Attrs:  []ortgraph.Attr{ortgraph.AInt("num_heads", heads), ortgraph.AFloat("scale", m.scale)}})[0]
	bsnh := g.Op("Reshape", []string{o, g.ConstI64(0, 0, heads, hd)})
	last := m.nodes[len(m.nodes)-1]
	if t, ok := readers.single(last.Output[0]); ok && isTranspose(t, 0, 2, 1, 3) {
		g.ReplaceUses(t.Output[0], bsnh) // O transposed back to [batch, seq, heads, hd] is bsnh itself
	}
	last.OpType, last.Domain = "Transpose", ""
	last.Input = []string{bsnh}
	last.Attribute = []*onnxpb.AttributeProto{ortgraph.AInts("perm", 0, 2, 1, 3)}
	if g.M.OpsetVersion("com.microsoft") < 1 {
		g.M.SetOpset("com.microsoft", 1)
	}
	return ""
}

// seqMajor returns x [batch, heads, seq, hd] as [batch, seq, heads, hd]. Where x, read by the
// attention alone, is Transpose(y, [0 2 1 3]) it is y; where it is a RotaryEmbedding (no
// partial rotation) of such a transpose, it is the rotary on y as [batch, seq, heads·hd]
// (the op's 3-D form, num_heads set), reshaped: no transpose either way. Otherwise a Transpose.
func seqMajor(g *ortgraph.Graph, readers soleReaders, x string, heads, hd int64) string {
	sole := func(v string) bool { _, ok := readers.single(v); return ok }
	p := g.Producer(x)
	switch {
	case sole(x) && isTranspose(p, 0, 2, 1, 3):
		return p.Input[0]
	case sole(x) && isOp(p, "RotaryEmbedding") && p.Domain == "" && ortgraph.AttrInt(p, "rotary_embedding_dim", 0) == 0 &&
		ortgraph.AttrInt(p, "num_heads", 0) == 0 && sole(p.Input[0]) && isTranspose(g.Producer(p.Input[0]), 0, 2, 1, 3):
		y := g.Producer(p.Input[0]).Input[0]
		ins := append([]string{g.Op("Reshape", []string{y, g.ConstI64(0, 0, -1)})}, p.Input[1:]...)
		attrs := append([]ortgraph.Attr{ortgraph.AInt("num_heads", heads)}, p.Attribute...)
		r := g.Add(ortgraph.NodeSpec{Op: "RotaryEmbedding", Inputs: ins, Attrs: attrs})[0]
		return g.Op("Reshape", []string{r, g.ConstI64(0, 0, heads, hd)})
	}
	return g.Op("Transpose", []string{x}, ortgraph.AInts("perm", 0, 2, 1, 3))
}

// matchAttention matches the pattern around Softmax sm; nil and "" where sm is no attention
// softmax, nil and a reason where it is one the pass leaves.
func matchAttention(g *ortgraph.Graph, r soleReaders, sm *onnxpb.NodeProto) (*attentionMatch, string) {
	if ax := ortgraph.AttrInt(sm, "axis", -1); ax != -1 && ax != 3 {
		return nil, ""
	}
	add := g.Producer(sm.Input[0])
	if !isOp(add, "Add") {
		return nil, ""
	}
	m := &attentionMatch{}
	var mm *onnxpb.NodeProto
	grouped := false
	for i, in := range add.Input {
		if mm, grouped = scoresProduct(g, in, m); mm != nil {
			m.mask = add.Input[1-i]
			break
		}
	}
	if mm == nil {
		return nil, ""
	}
	kt := g.Producer(mm.Input[1])
	if !isTranspose(kt, 0, 1, 3, 2) {
		return nil, "its scores' right operand is not kᵀ (Transpose perm [0 1 3 2])"
	}
	m.k = kt.Input[0]
	m.q = mm.Input[0]
	if qr := g.Producer(m.q); grouped && isOp(qr, "Reshape") { // q' = Reshape(q) to the kv heads
		m.q, m.nodes = qr.Input[0], append([]*onnxpb.NodeProto{qr}, m.nodes...)
	}
	m.nodes = append(m.nodes, kt, add, sm)
	out, why := probabilitiesProduct(r, sm, m)
	if out == nil {
		return nil, why
	}
	for _, n := range m.nodes[:len(m.nodes)-1] {
		if n == kt {
			continue // k's transpose may serve others (the backward's recomputation reads k itself)
		}
		if _, ok := r.single(n.Output[0]); !ok {
			return nil, fmt.Sprintf("%s %q's output is read outside the attention (the backward pass needs it)", n.OpType, n.Name)
		}
	}
	return m, ""
}

// scoresProduct follows v back through an optional Reshape (grouped: the scores of the kv
// head groups back to the query heads) and a Mul by a scalar constant to the MatMul of q' and
// kᵀ, recording the scale and the nodes in m; nil if v is not such a product.
func scoresProduct(g *ortgraph.Graph, v string, m *attentionMatch) (mm *onnxpb.NodeProto, grouped bool) {
	var nodes []*onnxpb.NodeProto
	n := g.Producer(v)
	if isOp(n, "Reshape") {
		nodes, n, grouped = append(nodes, n), g.Producer(n.Input[0]), true
	}
	if !isOp(n, "Mul") {
		return nil, false
	}
	for i, in := range n.Input {
		c, ok := g.ConstFloats(in)
		mm := g.Producer(n.Input[1-i])
		if ok && len(c) == 1 && isOp(mm, "MatMul") {
			m.scale = c[0]
			m.nodes = append([]*onnxpb.NodeProto{mm, n}, nodes...)
			return mm, grouped
		}
	}
	return nil, false
}

// probabilitiesProduct follows the probabilities of sm forward through an optional Reshape
// (grouped) to MatMul(P', v) and an optional Reshape back, appending the nodes to m (the
// last writes O); nil and a reason if they do not lead there alone.
func probabilitiesProduct(r soleReaders, sm *onnxpb.NodeProto, m *attentionMatch) (*onnxpb.NodeProto, string) {
	n, ok := r.single(sm.Output[0])
	if !ok {
		return nil, "its probabilities are read outside the attention (the backward pass needs them)"
	}
	grouped := isOp(n, "Reshape")
	if grouped {
		m.nodes = append(m.nodes, n)
		if n, ok = r.single(n.Output[0]); !ok {
			return nil, "its grouped probabilities are read outside the attention"
		}
	}
	if !isOp(n, "MatMul") || n.Input[0] != m.nodes[len(m.nodes)-1].Output[0] {
		return nil, "its probabilities do not feed a MatMul by v"
	}
	m.v, m.nodes = n.Input[1], append(m.nodes, n)
	if grouped {
		back, ok := r.single(n.Output[0])
		if !ok || !isOp(back, "Reshape") {
			return nil, "its grouped output is not reshaped back to the query heads alone"
		}
		m.nodes = append(m.nodes, back)
		return back, ""
	}
	return n, ""
}
