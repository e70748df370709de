package export

import (
	"fmt"
	"math"
	"strconv"

	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// KV-cache layouts of `ortq export --kv-cache`.
const (
	// KVConcat: each run returns past+new as a new present tensor (Concat), inputs
	// input_ids, attention_mask, position_ids; any runtime that feeds present back as past
	// drives it.
	KVConcat = "concat"
	// KVShared: onnxruntime-genai's past_present_share_buffer layout. The cache inputs are
	// buffers of a fixed maximum length, [batch, kv_heads, max_length, head_dim], and each
	// layer's com.microsoft.GroupQueryAttention writes the new keys and values into them in
	// place (present.* is bound to the same memory as past_key_values.*), with the rotary
	// embedding inside the op (cos/sin caches as initializers). Inputs are input_ids and
	// attention_mask only: row b's positions are 0..sum(attention_mask[b])-1, right-padded,
	// so every decode step has the same shapes and CUDA can capture it in a graph.
	KVShared = "shared"
)

// Names inside the shared layout's graph.
const (
	seqlensK     = "seqlens_k"
	totalSeqLen  = "total_sequence_length"
	cosCacheName = "rotary.cos_cache"
	sinCacheName = "rotary.sin_cache"
)

// checkShared refuses a model GroupQueryAttention cannot run with the rotary inside: its
// kernels want a head size that is a multiple of 16 (cos/sin caches of head_dim/2 columns,
// a multiple of 8).
func checkShared(s *Source) error {
	if hd := s.Cfg.HeadDim; hd%16 != 0 {
		return fmt.Errorf("--kv-cache %s: head_dim %d is not a multiple of 16, which GroupQueryAttention's rotary needs: use --kv-cache %s", KVShared, hd, KVConcat)
	}
	if s.Cfg.MaxPositions <= 0 {
		return fmt.Errorf("--kv-cache %s: config.json has no max_position_embeddings, the length of the rotary caches", KVShared)
	}
	return nil
}

// sharedInputs declares the shared layout's inputs and computes GroupQueryAttention's
// seqlens_k (sum(attention_mask[b]) − 1, int32 [batch]) and total_sequence_length (the
// mask's length, an int32 scalar), as onnxruntime-genai's model builder does.
func (b *builder) sharedInputs() {
	c, g := b.s.Cfg, b.g
	kv, hd := strconv.Itoa(c.NumKVHeads), strconv.Itoa(c.HeadDim)
	g.P.Input = []*onnxpb.ValueInfoProto{
		{Name: InputIDs, Type: sym(ortgraph.Int64, "batch_size", "sequence_length")},
		{Name: AttentionMask, Type: sym(ortgraph.Int64, "batch_size", "total_sequence_length")},
	}
	for i := 0; i < c.NumLayers; i++ {
		for _, n := range []string{PastKey(i), PastValue(i)} {
			g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: n, Type: sym(b.dt, "batch_size", kv, "max_sequence_length", hd)})
		}
	}
	g.Reindex()
	sum := g.Op("ReduceSum", []string{AttentionMask, g.ConstI64(1)}, ortgraph.AInt("keepdims", 0))
	seq := g.Op("Sub", []string{sum, g.ConstI64(1)})
	g.Add(ortgraph.NodeSpec{Op: "Cast", Inputs: []string{seq}, Attrs: []ortgraph.Attr{ortgraph.AInt("to", int64(ortgraph.Int32))},
		Name: "/model/attn_mask_reformat/seqlens_k"})
	g.P.Node[len(g.P.Node)-1].Output[0] = seqlensK
	total := g.Op("Gather", []string{g.Op("Shape", []string{AttentionMask}), g.ScalarI64(1)}, ortgraph.AInt("axis", 0))
	g.Add(ortgraph.NodeSpec{Op: "Cast", Inputs: []string{total}, Attrs: []ortgraph.Attr{ortgraph.AInt("to", int64(ortgraph.Int32))},
		Name: "/model/attn_mask_reformat/total_seq_len"})
	g.P.Node[len(g.P.Node)-1].Output[0] = totalSeqLen
	g.Reindex()
	b.rotaryCaches()
}

// rotaryCaches adds cos and sin [max_position_embeddings, head_dim/2] of the model's
// frequencies, computed as transformers does (inv_freq × position in float32), cast to the
// graph's type. GroupQueryAttention applies them as rotate_half (rotary_interleaved 0).
func (b *builder) rotaryCaches() {
	c := b.s.Cfg
	inv := hfimport.InvFreq(c.HeadDim, c.Rope)
	half := len(inv)
	cos := make([]float32, c.MaxPositions*half)
	sin := make([]float32, c.MaxPositions*half)
	for p := 0; p < c.MaxPositions; p++ {
		for j, f := range inv {
			a := float32(p) * f
			cos[p*half+j] = float32(math.Cos(float64(a)))
			sin[p*half+j] = float32(math.Sin(float64(a)))
		}
	}
	dims := []int64{int64(c.MaxPositions), int64(half)}
	b.g.AddInitializer(ortgraph.FloatTensor(cosCacheName, b.dt, dims, cos))
	b.g.AddInitializer(ortgraph.FloatTensor(sinCacheName, b.dt, dims, sin))
}

// attentionShared is layer l's attention in the shared layout: q, k, v [batch, seq,
// heads·head_dim] into GroupQueryAttention, which rotates q and k, writes k and v into the
// cache at each row's positions and attends causally over the row's valid keys. It returns
// the attention output [batch, seq, heads·head_dim].
func (b *builder) attentionShared(l int, q, k, v string) string {
	c, g := b.s.Cfg, b.g
	outs := g.Add(ortgraph.NodeSpec{Op: "GroupQueryAttention", Domain: "com.microsoft", NOut: 3,
		Inputs: []string{q, k, v, PastKey(l), PastValue(l), seqlensK, totalSeqLen, cosCacheName, sinCacheName},
		Attrs: []ortgraph.Attr{ortgraph.AInt("num_heads", int64(c.NumHeads)), ortgraph.AInt("kv_num_heads", int64(c.NumKVHeads)),
			ortgraph.AInt("do_rotary", 1), ortgraph.AInt("rotary_interleaved", 0),
			ortgraph.AFloat("scale", float32(math.Pow(float64(c.HeadDim), -0.5)))},
		Name: "/model/layers." + strconv.Itoa(l) + "/attn/GroupQueryAttention"})
	n := g.P.Node[len(g.P.Node)-1]
	n.Output[1], n.Output[2] = PresentKey(l), PresentValue(l)
	kv, hd := strconv.Itoa(c.NumKVHeads), strconv.Itoa(c.HeadDim)
	for _, name := range []string{PresentKey(l), PresentValue(l)} {
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: name, Type: sym(b.dt, "batch_size", kv, "max_sequence_length", hd)})
	}
	g.Reindex()
	return outs[0]
}
