package export

import (
	"math"
	"strconv"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// layer is decoder layer l with its cache: attention over past+current keys, then the MLP.
// h is the residual stream and d the previous layer's MLP output still to be added to it
// ("" before the first layer); it returns the new pair, so that the residual Add and the
// norm after it can be one node (addNorm).
func (b *builder) layer(l int, h, d, cos, sin, mask string) (string, string, error) {
	g := b.g
	mod := "model.layers." + strconv.Itoa(l)
	x, h := b.addNorm(2*l, h, d)
	o, err := b.attention(l, mod+".self_attn", x, cos, sin, mask)
	if err != nil {
		return "", "", err
	}
	x, h = b.addNorm(2*l+1, h, o)
	gu, err := b.linears(x, mod+".mlp.gate_proj", mod+".mlp.up_proj")
	if err != nil {
		return "", "", err
	}
	act := g.Op("Mul", []string{gu[0], g.Op("Sigmoid", []string{gu[0]})})
	down, err := b.linear(mod+".mlp.down_proj", g.Op("Mul", []string{act, gu[1]}))
	if err != nil {
		return "", "", err
	}
	return h, down, nil
}

// attention is layer l's attention block (module attn) on the normed x, o_proj included.
func (b *builder) attention(l int, attn, x, cos, sin, mask string) (string, error) {
	mods := [3]string{attn + ".q_proj", attn + ".k_proj", attn + ".v_proj"}
	var o string
	if qkv, ok, err := b.packedQKV(mods, x); err != nil {
		return "", err
	} else if ok {
		o = b.attentionShared(l, qkv, "", "")
	} else {
		ys, err := b.linears(x, mods[:]...)
		if err != nil {
			return "", err
		}
		if b.shared {
			o = b.attentionShared(l, ys[0], ys[1], ys[2])
		} else {
			o = b.attentionConcat(l, [3]string(ys), cos, sin, mask)
		}
	}
	return b.linear(attn+".o_proj", o)
}

// attentionConcat is layer l's attention in the concat layout: heads, rotary, the cache
// concat (present = past + new), repeat_kv and eager attention with the additive mask.
func (b *builder) attentionConcat(l int, qkv [3]string, cos, sin, mask string) string {
	g, c := b.g, b.s.Cfg
	nH, nKV, hd := int64(c.NumHeads), int64(c.NumKVHeads), int64(c.HeadDim)
	heads := func(x string, n int64) string {
		r := g.Op("Reshape", []string{x, g.ConstI64(0, 0, n, hd)})
		return g.Op("Transpose", []string{r}, ortgraph.AInts("perm", 0, 2, 1, 3))
	}
	q, k, v := heads(qkv[0], nH), heads(qkv[1], nKV), heads(qkv[2], nKV)
	q, k = b.rotate(q, cos, sin), b.rotate(k, cos, sin)
	k = b.output(g.Op("Concat", []string{PastKey(l), k}, ortgraph.AInt("axis", 2)), PresentKey(l))
	v = b.output(g.Op("Concat", []string{PastValue(l), v}, ortgraph.AInt("axis", 2)), PresentValue(l))
	if rep := nH / nKV; rep > 1 {
		// repeat_kv: [b, kv, t, d] → [b, kv, 1, t, d] → [b, kv, rep, t, d] → [b, heads, t, d].
		repeat := func(x string) string {
			u := g.Op("Unsqueeze", []string{x, g.ConstI64(2)})
			e := g.Op("Expand", []string{u, g.ConstI64(1, 1, rep, 1, 1)})
			return g.Op("Reshape", []string{e, g.ConstI64(0, nH, -1, hd)})
		}
		k, v = repeat(k), repeat(v)
	}
	kt := g.Op("Transpose", []string{k}, ortgraph.AInts("perm", 0, 1, 3, 2))
	s := g.Op("MatMul", []string{q, kt})
	s = g.Op("Mul", []string{s, g.ConstF(b.dt, float32(math.Pow(float64(hd), -0.5)))})
	s = g.Op("Add", []string{s, mask})
	var p string
	if b.dt == ortgraph.Float {
		p = g.Op("Softmax", []string{s}, ortgraph.AInt("axis", -1))
	} else {
		// softmax(dtype=float32).to(q.dtype), as transformers' eager attention.
		p = g.Op("Softmax", []string{g.Op("Cast", []string{s}, ortgraph.AInt("to", int64(ortgraph.Float)))}, ortgraph.AInt("axis", -1))
		p = g.Op("Cast", []string{p}, ortgraph.AInt("to", int64(b.dt)))
	}
	o := g.Op("MatMul", []string{p, v})
	o = g.Op("Transpose", []string{o}, ortgraph.AInts("perm", 0, 2, 1, 3))
	return g.Op("Reshape", []string{o, g.ConstI64(0, 0, nH*hd)})
}

// rotate is x·cos + rotate_half(x)·sin on [batch, heads, seq, head_dim].
func (b *builder) rotate(x, cos, sin string) string {
	g := b.g
	hd := int64(b.s.Cfg.HeadDim)
	x1 := g.Op("Slice", []string{x, g.ConstI64(0), g.ConstI64(hd / 2), g.ConstI64(3)})
	x2 := g.Op("Slice", []string{x, g.ConstI64(hd / 2), g.ConstI64(hd), g.ConstI64(3)})
	rot := g.Op("Concat", []string{g.Op("Neg", []string{x2}), x1}, ortgraph.AInt("axis", -1))
	return g.Op("Add", []string{g.Op("Mul", []string{x, cos}), g.Op("Mul", []string{rot, sin})})
}

// output makes v a graph output named name (through an Identity, so v keeps its readers).
func (b *builder) output(v, name string) string {
	g := b.g
	n := &onnxpb.NodeProto{OpType: "Identity", Input: []string{v}, Output: []string{name}, Name: g.Fresh("/present/" + name)}
	g.P.Node = append(g.P.Node, n)
	c := b.s.Cfg
	g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: name,
		Type: sym(b.dt, "batch_size", strconv.Itoa(c.NumKVHeads), "total_sequence_length", strconv.Itoa(c.HeadDim))})
	g.Reindex()
	return v
}

// loraUpdate adds (α/r)·(x·Aᵀ)·Bᵀ to the base output y: the eval graph's own ops in its
// order (two MatMuls, the scale multiply, the Add), so the logits agree to the last bit
// the kernels allow.
func (b *builder) loraUpdate(mod, x, y string) string {
	g := b.g
	a, bt := b.ad.inputs(b, mod)
	h := g.Op("MatMul", []string{x, a})
	d := g.Op("MatMul", []string{h, bt})
	d = g.Op("Mul", []string{d, g.ConstF(b.dt, float32(b.ad.Scale))})
	return g.Op("Add", []string{y, d})
}
