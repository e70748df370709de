package passes_test

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/ortq/ortq/internal/half"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/quantize"
	"google.golang.org/protobuf/proto"
)

// Per-pass goldens: each pass runs on the smallest hand-built graph that shows its rewrite
// (a one-layer, one-head Llama-like decoder from tinyLlama, or a few nodes), and the
// rewritten graph (ortgraph.Dump), the pass's log and what it returns are kept as text in
// testdata/<pass>.txt, one "# case" section per table row. go test -update rewrites them.

// tinyLlamaOpts varies tinyLlama.
type tinyLlamaOpts struct {
	// outIn stores the decoder weights [out, in] behind a Transpose (TorchScript style)
	// instead of the exporter's pre-transposed [in, out].
	outIn bool
	// anonymous names nodes n0, n1, … so only the structure identifies the Linears.
	anonymous bool
}

// tinyLlama is a one-layer Llama-like decoder in float32: embedding, single-head attention
// without rotary or mask (q, k, v, o), residual, SiLU MLP (gate, up, down) and an untied
// lm_head; hidden 16, intermediate 24 (not a whole number of 16-blocks), vocabulary 32.
// Node names follow the exporter's module paths (/model/layers.0/self_attn/q_proj/MatMul),
// which is how FindLinears and Recompute read modules and layers.
func tinyLlama(o tinyLlamaOpts) *ortgraph.Graph {
	const H, I, V = 16, 24, 32
	m := &ortgraph.Model{P: &onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 18}},
		Graph:       &onnxpb.GraphProto{Name: "tiny-llama"},
	}, Dir: "."}
	gp := m.P.Graph
	gp.Input = []*onnxpb.ValueInfoProto{{Name: "input_ids", Type: ortgraph.SymTensorType(ortgraph.Int64, []string{"batch", "seq"})}}
	types := map[string]*onnxpb.TypeProto{}
	seq := 0
	weight := func(name string, rows, cols int64) string {
		v := make([]float32, rows*cols)
		seq++
		for i := range v {
			v[i] = float32(math.Sin(float64(i)*0.61+float64(seq)*1.3)) * 0.25
		}
		gp.Initializer = append(gp.Initializer, ortgraph.FloatTensor(name, ortgraph.Float, []int64{rows, cols}, v))
		return name
	}
	f32 := func(dims ...string) *onnxpb.TypeProto { return ortgraph.SymTensorType(ortgraph.Float, dims) }
	node := func(name, op string, in []string, out string, t *onnxpb.TypeProto, attrs ...ortgraph.Attr) string {
		if o.anonymous {
			name = fmt.Sprintf("n%d", len(gp.Node))
		}
		gp.Node = append(gp.Node, &onnxpb.NodeProto{Name: name, OpType: op, Input: in, Output: []string{out}, Attribute: attrs})
		types[out] = t
		return out
	}
	bsd := func(d int) *onnxpb.TypeProto { return f32("batch", "seq", fmt.Sprint(d)) }
	linear := func(mod, kind, x, out string, in, n int64) string {
		path := "/model/layers.0/" + mod + "/" + kind
		name := "model.layers.0." + mod + "." + kind + ".weight"
		if o.anonymous {
			name = fmt.Sprintf("w%d", seq)
		}
		if !o.outIn {
			return node(path+"/MatMul", "MatMul", []string{x, weight(name, in, n)}, out, bsd(int(n)))
		}
		wt := node(path+"/Transpose", "Transpose", []string{weight(name, n, in)}, out+".wT", ortgraph.TensorType(ortgraph.Float, []int64{in, n}),
			ortgraph.AInts("perm", 1, 0))
		return node(path+"/MatMul", "MatMul", []string{x, wt}, out, bsd(int(n)))
	}
	embedName, headName := "model.embed_tokens.weight", "lm_head.weight"
	if o.anonymous {
		embedName, headName = "emb", "head"
	}
	h := node("/model/embed_tokens/Gather", "Gather", []string{weight(embedName, V, H), "input_ids"}, "embed", bsd(H), ortgraph.AInt("axis", 0))
	q := linear("self_attn", "q_proj", h, "q", H, H)
	k := linear("self_attn", "k_proj", h, "k", H, H)
	v := linear("self_attn", "v_proj", h, "v", H, H)
	att := "/model/layers.0/self_attn/"
	kt := node(att+"Transpose_kt", "Transpose", []string{k}, "kt", f32("batch", fmt.Sprint(H), "seq"), ortgraph.AInts("perm", 0, 2, 1))
	gp.Initializer = append(gp.Initializer, ortgraph.FloatTensor("scale", ortgraph.Float, nil, []float32{0.25}))
	s := node(att+"MatMul", "MatMul", []string{q, kt}, "scores", f32("batch", "seq", "seq"))
	s = node(att+"Mul", "Mul", []string{s, "scale"}, "scaled", f32("batch", "seq", "seq"))
	p := node(att+"Softmax", "Softmax", []string{s}, "probs", f32("batch", "seq", "seq"), ortgraph.AInt("axis", -1))
	a := node(att+"MatMul_1", "MatMul", []string{p, v}, "attn", bsd(H))
	a = linear("self_attn", "o_proj", a, "o", H, H)
	h = node("/model/layers.0/Add", "Add", []string{h, a}, "h1", bsd(H))
	gate := linear("mlp", "gate_proj", h, "gate", H, I)
	up := linear("mlp", "up_proj", h, "up", H, I)
	sg := node("/model/layers.0/mlp/act_fn/Sigmoid", "Sigmoid", []string{gate}, "sig", bsd(I))
	act := node("/model/layers.0/mlp/act_fn/Mul", "Mul", []string{gate, sg}, "silu", bsd(I))
	prod := node("/model/layers.0/mlp/Mul", "Mul", []string{act, up}, "prod", bsd(I))
	down := linear("mlp", "down_proj", prod, "down", I, H)
	h = node("/model/layers.0/Add_1", "Add", []string{h, down}, "h2", bsd(H))
	var head string
	if o.outIn {
		head = node("/lm_head/Transpose", "Transpose", []string{weight(headName, V, H)}, "lm_head.wT", ortgraph.TensorType(ortgraph.Float, []int64{H, V}),
			ortgraph.AInts("perm", 1, 0))
	} else {
		head = weight(headName, H, V)
	}
	node("/lm_head/MatMul", "MatMul", []string{h, head}, "logits", bsd(V))
	gp.Output = []*onnxpb.ValueInfoProto{{Name: "logits", Type: bsd(V)}}
	g := ortgraph.NewGraph(m)
	for _, n := range gp.Node {
		if n.Output[0] != "logits" {
			g.SetType(n.Output[0], types[n.Output[0]])
		}
	}
	return g
}

// passRun runs passes over g with opts and returns the context and a golden section opened
// with "# name" and the passes' log lines.
func passRun(t *testing.T, name string, g *ortgraph.Graph, opts ortgraph.Options, ps ...*ortgraph.Pass) (*ortgraph.Context, *strings.Builder) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", name)
	ctx, err := ortgraph.RunPasses(g, opts, func(f string, a ...any) { fmt.Fprintf(&b, "# "+f+"\n", a...) }, ps...)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, &b
}

// passRunFrom is passRun that also returns g as it was before the passes (sameOutputs's
// "before").
func passRunFrom(t *testing.T, name string, g *ortgraph.Graph, opts ortgraph.Options, ps ...*ortgraph.Pass) (*ortgraph.Context, *strings.Builder, []byte) {
	t.Helper()
	before, err := proto.Marshal(g.M.P)
	if err != nil {
		t.Fatal(err)
	}
	ctx, b := passRun(t, name, g, opts, ps...)
	return ctx, b, before
}

// initializers lists g's initializers (name, type, and an FNV-1a hash of their bytes) in
// name order, for passes that write weights.
func initializers(t *testing.T, g *ortgraph.Graph) string {
	t.Helper()
	var lines []string
	for _, in := range g.P.Initializer {
		raw, err := g.M.TensorBytes(in)
		if err != nil {
			t.Fatal(err)
		}
		h := fnv.New32a()
		h.Write(raw)
		lines = append(lines, fmt.Sprintf("init %s: %s%v fnv=%08x\n", in.Name, strings.ToLower(ortgraph.DTypeName(in.DataType)), in.Dims, h.Sum32()))
	}
	sort.Strings(lines)
	return strings.Join(lines, "")
}

// TestFindLinearsGolden keeps FindLinears' result on the tiny decoder found by names, by
// structure alone, through Transpose-read [out, in] weights, and in a graph already 4-bit.
func TestFindLinearsGolden(t *testing.T) {
	var out strings.Builder
	for _, c := range []struct {
		name     string
		opts     tinyLlamaOpts
		prequant bool
	}{
		{"names", tinyLlamaOpts{}, false},
		{"structure", tinyLlamaOpts{anonymous: true}, false},
		{"out-in-transposed", tinyLlamaOpts{outIn: true}, false},
		{"prequantized", tinyLlamaOpts{}, true},
	} {
		g := tinyLlama(c.opts)
		if c.prequant {
			opts := ortgraph.Options{passes.Quantize: passes.QuantizeOptions{Bits: 4, Quant: quantize.Options{BlockSize: 16}}}
			if _, err := ortgraph.RunPasses(g, opts, nil, passes.Quantize); err != nil {
				t.Fatal(err)
			}
		}
		ctx, b := passRun(t, c.name, g, nil, passes.FindLinears)
		ls := ortgraph.ResultOf[*passes.Linears](ctx, passes.FindLinears)
		fmt.Fprintf(b, "layers=%d hidden=%d\n", ls.Layers, ls.Hidden)
		for _, l := range ls.All {
			fmt.Fprintf(b, "%s layer=%d kind=%s node=%s weight=%s in=%d out=%d outIn=%v prequantized=%v source=%s\n",
				l.Module(), l.Layer, l.Kind, l.Node.Name, l.Weight, l.In, l.Out, l.WeightIsOutIn, l.Prequantized, l.Source)
		}
		out.WriteString(b.String())
	}
	golden(t, "findlinears.txt", out.String())
}

// TestQuantizeGolden keeps the tiny decoder after Quantize: symmetric with lm_head kept
// 16-bit, and asymmetric (zero points) with lm_head quantized; with the initializers (a
// hash of the packed bytes) and the manifest records.
func TestQuantizeGolden(t *testing.T) {
	var out strings.Builder
	for _, c := range []struct {
		name   string
		asym   bool
		lmHead bool
	}{{"symmetric", false, false}, {"asymmetric-lm_head", true, true}} {
		g := tinyLlama(tinyLlamaOpts{})
		q := passes.QuantizeOptions{Bits: 4, Quant: quantize.Options{BlockSize: 16, Asymmetric: c.asym}, LMHead: c.lmHead}
		ctx, b := passRun(t, c.name, g, ortgraph.Options{passes.Quantize: q}, passes.Quantize)
		b.WriteString(ortgraph.Dump(g))
		b.WriteString(initializers(t, g))
		for _, q := range ortgraph.ResultOf[[]manifest.QuantLayer](ctx, passes.Quantize) {
			fmt.Fprintf(b, "layer %s %v weights=%s scales=%s rms=%.4g rel=%.4g max=%.4g\n", q.Module, q.Shape, q.Weights, q.Scales, q.RMS, q.RelRMS, q.MaxAbs)
		}
		out.WriteString(b.String())
	}
	golden(t, "quantize.txt", out.String())
}

// TestQuantizeBnb4Golden keeps the tiny decoder's Linears rewritten as MatMulBnb4 (NF4, block
// 16), with the absmax as an initializer and double-quantized (the gated absmax chain in
// front of each node, its initializers named in the node's metadata).
func TestQuantizeBnb4Golden(t *testing.T) {
	var out strings.Builder
	for _, dq := range []bool{false, true} {
		g := tinyLlama(tinyLlamaOpts{})
		q := passes.QuantizeOptions{Bits: 4, Quant: quantize.Options{BlockSize: 16, Type: quantize.NF4, DoubleQuant: dq}}
		ctx, b := passRun(t, fmt.Sprintf("nf4 double-quant=%v", dq), g, ortgraph.Options{passes.Quantize: q}, passes.Quantize)
		b.WriteString(ortgraph.Dump(g))
		b.WriteString(initializers(t, g))
		for _, q := range ortgraph.ResultOf[[]manifest.QuantLayer](ctx, passes.Quantize) {
			fmt.Fprintf(b, "layer %s %v weights=%s absmax=%s rms=%.4g rel=%.4g max=%.4g\n", q.Module, q.Shape, q.Weights, q.Scales, q.RMS, q.RelRMS, q.MaxAbs)
		}
		out.WriteString(b.String())
	}
	golden(t, "quantize_bnb4.txt", out.String())
}

// sameOutputs fails the test unless run's output of g (after a pass) equals its output of
// the serialized graph before, within tol relative.
func sameOutputs(t *testing.T, name string, before []byte, g *ortgraph.Graph, tol float64, run func(*testing.T, []byte) []float32) {
	t.Helper()
	after, err := proto.Marshal(g.M.P)
	if err != nil {
		t.Fatal(err)
	}
	want, got := run(t, before), run(t, after)
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > tol*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("%s: output[%d] = %g after, %g before", name, i, got[i], want[i])
		}
	}
}

// fusionGolden runs a fusing pass on g, checks how many patterns it fused and that ONNX
// Runtime's outputs (run) are unchanged within tol, and returns the golden text: the pass's
// log and g after it.
// allOutputs runs a serialized graph on feeds and returns every output, float16 ones widened,
// one after the other (sameOutputs's run for the fusion goldens).
func allOutputs(t *testing.T, model []byte, feeds map[string]*ortrun.Tensor) []float32 {
	t.Helper()
	s, err := ortrun.NewSessionFromBytes(model, ortrun.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Run(feeds, s.OutputNames())
	if err != nil {
		t.Fatal(err)
	}
	var all []float32
	for _, o := range s.OutputNames() {
		switch d := res[o].Data.(type) {
		case []float32:
			all = append(all, d...)
		case []uint16:
			for _, h := range d {
				all = append(all, half.Float16ToFloat32(h))
			}
		default:
			t.Fatalf("output %q: %T", o, d)
		}
	}
	return all
}

// randomFeed is a float32 (or, with f16, float16) tensor of shape with normal values × scale.
func randomFeed(r *rand.Rand, shape []int64, scale float64, f16 bool) *ortrun.Tensor {
	v := make([]float32, ortgraph.NumElements(shape))
	for i := range v {
		v[i] = float32(scale * r.NormFloat64())
	}
	if f16 {
		return &ortrun.Tensor{DType: ortrun.Float16, Shape: shape, Data: half.EncodeFloat16(v)}
	}
	return &ortrun.Tensor{DType: ortrun.Float32, Shape: shape, Data: v}
}

func fusionGolden(t *testing.T, name string, g *ortgraph.Graph, pass *ortgraph.Pass, fused int, tol float64,
	run func(*testing.T, []byte) []float32) string {
	t.Helper()
	ctx, b, before := passRunFrom(t, name, g, nil, pass)
	if res := ortgraph.ResultOf[*passes.FusionResult](ctx, pass); res.Fused != fused {
		t.Errorf("%s: %d patterns fused, want %d", name, res.Fused, fused)
	}
	b.WriteString(ortgraph.Dump(g))
	sameOutputs(t, name, before, g, tol, run)
	return b.String()
}

// TestBnb4ForwardGolden keeps the tiny decoder's NF4 Linears (block 16) after Bnb4Forward:
// each MatMulBnb4 a FusedMatMul(transB) over its weight dequantized in the graph, gated on
// its input, with the absmax as an initializer and double-quantized; ONNX Runtime's logits
// of the rewritten graph equal those of the MatMulBnb4 graph.
func TestBnb4ForwardGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, dq := range []bool{false, true} {
		g := tinyLlama(tinyLlamaOpts{})
		q := passes.QuantizeOptions{Bits: 4, Quant: quantize.Options{BlockSize: 16, Type: quantize.NF4, DoubleQuant: dq}}
		if _, err := ortgraph.RunPasses(g, ortgraph.Options{passes.Quantize: q}, nil, passes.Quantize); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("nf4 double-quant=%v", dq)
		ctx, b, before := passRunFrom(t, name, g, nil, passes.Bnb4Forward)
		if res := ortgraph.ResultOf[*passes.FusionResult](ctx, passes.Bnb4Forward); res.Fused != 7 || len(res.Skipped) > 0 {
			t.Errorf("%s: %d products rewritten (skipped %v), want 7", name, res.Fused, res.Skipped)
		}
		b.WriteString(ortgraph.Dump(g))
		out.WriteString(b.String())
		sameOutputs(t, name, before, g, 1e-5, tinyLogits)
	}
	golden(t, "bnb4forward.txt", out.String())
}

// TestDQForwardGolden keeps the tiny decoder's 4-bit Linears rewritten as DequantizeLinear
// + MatMul, symmetric and asymmetric (down_proj's K of 24 is padded to two blocks: Slice).
func TestDQForwardGolden(t *testing.T) {
	var out strings.Builder
	for _, c := range []struct {
		name string
		asym bool
	}{{"symmetric", false}, {"asymmetric", true}} {
		g := tinyLlama(tinyLlamaOpts{})
		opts := ortgraph.Options{passes.Quantize: passes.QuantizeOptions{Bits: 4, Quant: quantize.Options{BlockSize: 16, Asymmetric: c.asym}}}
		_, b := passRun(t, c.name, g, opts, passes.DQForward)
		b.WriteString(ortgraph.Dump(g))
		b.WriteString(initializers(t, g))
		out.WriteString(b.String())
	}
	golden(t, "dqforward.txt", out.String())
}

// TestNBitsForwardGolden keeps the tiny decoder's 4-bit Linears after DQForward and then
// NBitsForward (symmetric: every forward product back to MatMulNBits over a uint8 form of
// the UINT4 data; asymmetric: left as DequantizeLinear + MatMul, with the reason), and checks
// that ONNX Runtime's logits of the rewritten graph equal those of the DQForward graph.
func TestNBitsForwardGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name  string
		asym  bool
		fused int
	}{{"symmetric", false, 7}, {"asymmetric", true, 0}} {
		g := tinyLlama(tinyLlamaOpts{})
		g.M.SetOpset("", 21) // UINT4 DequantizeLinear, as prepare sets it
		opts := ortgraph.Options{passes.Quantize: passes.QuantizeOptions{Bits: 4, Quant: quantize.Options{BlockSize: 16, Asymmetric: c.asym}}}
		if _, err := ortgraph.RunPasses(g, opts, nil, passes.DQForward); err != nil {
			t.Fatal(err)
		}
		ctx, b, before := passRunFrom(t, c.name, g, nil, passes.NBitsForward)
		res := ortgraph.ResultOf[*passes.NBitsForwardResult](ctx, passes.NBitsForward)
		if res.Fused != c.fused {
			t.Errorf("%s: %d products as MatMulNBits, want %d", c.name, res.Fused, c.fused)
		}
		fmt.Fprintf(b, "# shared %v\n", res.Shared)
		b.WriteString(ortgraph.Dump(g))
		b.WriteString(initializers(t, g))
		out.WriteString(b.String())
		sameOutputs(t, c.name, before, g, 1e-4, tinyLogits)
	}
	golden(t, "nbitsforward.txt", out.String())
}

// tinyLogits is ONNX Runtime's logits of the tiny decoder (serialized) for fixed ids.
func tinyLogits(t *testing.T, model []byte) []float32 {
	t.Helper()
	ids := &ortrun.Tensor{DType: ortrun.Int64, Shape: []int64{1, 5}, Data: []int64{3, 1, 4, 1, 5}}
	s, err := ortrun.NewSessionFromBytes(model, ortrun.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Run(map[string]*ortrun.Tensor{"input_ids": ids}, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	return res["logits"].Data.([]float32)
}

// TestBackwardGolden keeps the training graph of the tiny decoder with LoRA on q (whose
// gradient runs back through the attention's Softmax): gradients from the plain loss and
// from the chunked loss's seed.
func TestBackwardGolden(t *testing.T) {
	var out strings.Builder
	for _, c := range []struct {
		name   string
		chunks int
	}{{"lora_q", 0}, {"lora_q_chunked", 2}} {
		g := tinyLlama(tinyLlamaOpts{})
		opts := passes.RunOptions{
			Quantize: passes.QuantizeOptions{Bits: 16},
			LoRA:     passes.LoRAOptions{Targets: []string{"q_proj"}, Rank: 2, Alpha: 4},
			Loss:     passes.LossOptions{Train: true, Chunks: c.chunks},
		}
		_, b := passRun(t, c.name, g, opts.Options(), passes.Backward)
		b.WriteString(ortgraph.Dump(g))
		out.WriteString(b.String())
	}
	golden(t, "backward.txt", out.String())
}

// TestRecomputeGolden keeps the tiny decoder's training graph (LoRA on q) with layer 0
// recomputed in the backward pass, 16-bit and 4-bit (where the backward pass's dx reads the
// recomputed dequantized weights).
func TestRecomputeGolden(t *testing.T) {
	var out strings.Builder
	for _, c := range []struct {
		name string
		bits int
	}{{"16bit_q", 16}, {"4bit_q", 4}} {
		g := tinyLlama(tinyLlamaOpts{})
		opts := passes.RunOptions{
			Quantize: passes.QuantizeOptions{Bits: c.bits, Quant: quantize.Options{BlockSize: 16}},
			LoRA:     passes.LoRAOptions{Targets: []string{"q_proj"}, Rank: 2, Alpha: 4},
			Loss:     passes.LossOptions{Train: true},
		}
		ps := []*ortgraph.Pass{passes.LoRA, passes.Loss, passes.Backward, passes.Recompute}
		if c.bits == 4 {
			ps = append([]*ortgraph.Pass{passes.DQForward}, ps...)
		}
		ctx, b := passRun(t, c.name, g, opts.Options(), ps...)
		r := ortgraph.ResultOf[*passes.RecomputeResult](ctx, passes.Recompute)
		fmt.Fprintf(b, "# layers=%d cloned=%d reused=%d\n", r.Layers, r.Cloned, r.Reused)
		b.WriteString(ortgraph.Dump(g))
		out.WriteString(b.String())
	}
	golden(t, "recompute.txt", out.String())
}

// TestRecomputeSelectiveGolden keeps the tiny decoder's 4-bit training graph (LoRA on q)
// recomputed selectively: the backward pass reads the Linears' products (the q LoRA sum, k,
// v, gate, up) from the forward pass and re-runs only the norms, attention and activations.
func TestRecomputeSelectiveGolden(t *testing.T) {
	g := tinyLlama(tinyLlamaOpts{})
	opts := passes.RunOptions{
		Quantize:  passes.QuantizeOptions{Bits: 4, Quant: quantize.Options{BlockSize: 16}},
		LoRA:      passes.LoRAOptions{Targets: []string{"q_proj"}, Rank: 2, Alpha: 4},
		Loss:      passes.LossOptions{Train: true},
		Recompute: passes.RecomputeOptions{KeepProducts: true},
	}
	ctx, b := passRun(t, "4bit_q_selective", g, opts.Options(), passes.DQForward, passes.LoRA, passes.Loss, passes.Backward, passes.Recompute)
	r := ortgraph.ResultOf[*passes.RecomputeResult](ctx, passes.Recompute)
	if r.Kept == 0 || r.Reused != 0 {
		t.Errorf("kept %d products, reused %d dequantizations: want products kept and no Linear recomputed", r.Kept, r.Reused)
	}
	for _, n := range g.P.Node {
		if strings.HasPrefix(n.Name, "recompute/") && (n.OpType == "MatMulNBits" || n.OpType == "DequantizeLinear") {
			t.Errorf("%s: a Linear is recomputed", n.Name)
		}
	}
	fmt.Fprintf(b, "# layers=%d kept=%d cloned=%d reused=%d\n", r.Layers, r.Kept, r.Cloned, r.Reused)
	b.WriteString(ortgraph.Dump(g))
	golden(t, "recompute_selective.txt", b.String())
}

// TestRecomputeKeepKindsGolden keeps the tiny decoder's 4-bit training graph (LoRA on q and
// v) recomputed per layer with the k and v products kept (prepare --keep-kv): the
// recomputation reads k_proj's product and v's LoRA sum from the forward pass and runs no k
// or v GEMM.
func TestRecomputeKeepKindsGolden(t *testing.T) {
	g := tinyLlama(tinyLlamaOpts{})
	opts := passes.RunOptions{
		Quantize:  passes.QuantizeOptions{Bits: 4, Quant: quantize.Options{BlockSize: 16}},
		LoRA:      passes.LoRAOptions{Targets: []string{"q_proj", "v_proj"}, Rank: 2, Alpha: 4},
		Loss:      passes.LossOptions{Train: true},
		Recompute: passes.RecomputeOptions{KeepKinds: []string{"k_proj", "v_proj"}},
	}
	ctx, b := passRun(t, "4bit_qv_keep_kv", g, opts.Options(), passes.DQForward, passes.LoRA, passes.Loss, passes.Backward, passes.Recompute)
	r := ortgraph.ResultOf[*passes.RecomputeResult](ctx, passes.Recompute)
	if r.Kept != 2*r.Layers {
		t.Errorf("kept %d products in %d layers: want k and v of each", r.Kept, r.Layers)
	}
	for _, n := range g.P.Node {
		if strings.HasPrefix(n.Name, "recompute/") && (strings.Contains(n.Name, "k_proj") || strings.Contains(n.Name, "v_proj")) &&
			(n.OpType == "MatMulNBits" || n.OpType == "MatMul") {
			t.Errorf("%s: a k or v product is recomputed", n.Name)
		}
	}
	fmt.Fprintf(b, "# layers=%d kept=%d cloned=%d reused=%d\n", r.Layers, r.Kept, r.Cloned, r.Reused)
	b.WriteString(ortgraph.Dump(g))
	golden(t, "recompute_keep_kv.txt", b.String())
}

// TestORTCompatGolden keeps a RotaryEmbedding without position_ids (its batch-1 cos/sin
// caches expanded to x's batch) and one with position_ids (left as it is).
func TestORTCompatGolden(t *testing.T) {
	var out strings.Builder
	for _, c := range []struct {
		name   string
		posIDs bool
	}{{"caches", false}, {"position_ids", true}} {
		m := &ortgraph.Model{P: &onnxpb.ModelProto{
			IrVersion:   11,
			OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 23}},
			Graph:       &onnxpb.GraphProto{Name: "rope"},
		}, Dir: "."}
		f := ortgraph.Float
		m.P.Graph.Input = []*onnxpb.ValueInfoProto{
			{Name: "x", Type: ortgraph.SymTensorType(f, []string{"batch", "2", "seq", "8"})},
			{Name: "cos", Type: ortgraph.SymTensorType(f, []string{"1", "seq", "4"})},
			{Name: "sin", Type: ortgraph.SymTensorType(f, []string{"1", "seq", "4"})},
		}
		ins := []string{"x", "cos", "sin"}
		if c.posIDs {
			m.P.Graph.Input[1].Type = ortgraph.SymTensorType(f, []string{"64", "4"})
			m.P.Graph.Input[2].Type = ortgraph.SymTensorType(f, []string{"64", "4"})
			m.P.Graph.Input = append(m.P.Graph.Input, &onnxpb.ValueInfoProto{Name: "position_ids", Type: ortgraph.SymTensorType(ortgraph.Int64, []string{"batch",
				"seq"})})
			ins = append(ins, "position_ids")
		}
		m.P.Graph.Node = []*onnxpb.NodeProto{{Name: "rope", OpType: "RotaryEmbedding", Input: ins, Output: []string{"y"}}}
		m.P.Graph.Output = []*onnxpb.ValueInfoProto{{Name: "y", Type: ortgraph.SymTensorType(f, []string{"batch", "2", "seq", "8"})}}
		g := ortgraph.NewGraph(m)
		ctx, b := passRun(t, c.name, g, nil, passes.ORTCompat)
		fmt.Fprintf(b, "# fixed %d\n", ortgraph.ResultOf[int](ctx, passes.ORTCompat))
		b.WriteString(ortgraph.Dump(g))
		for _, n := range g.P.Node {
			if n.OpType == "Expand" {
				fmt.Fprintf(b, "type %s: %s\n", n.Output[0], strings.Join(g.SymDims(n.Output[0]), ","))
			}
		}
		out.WriteString(b.String())
	}
	golden(t, "ortcompat.txt", out.String())
}

// TestHalfSoftmaxGolden keeps the graph text of TestHalfSoftmax's cases: the folded
// sandwich and the two near misses left alone.
func TestHalfSoftmaxGolden(t *testing.T) {
	var out strings.Builder
	for _, variant := range []string{"", "cast-to-float", "float-probabilities-read"} {
		g, _ := passes.HalfSoftmaxGraph(variant)
		ctx, b := passRun(t, "variant="+variant, g, nil, passes.HalfSoftmax)
		fmt.Fprintf(b, "# folded %d\n", ortgraph.ResultOf[int](ctx, passes.HalfSoftmax))
		b.WriteString(ortgraph.Dump(g))
		out.WriteString(b.String())
	}
	golden(t, "halfsoftmax.txt", out.String())
}

// TestRotaryGolden keeps the graph text of TestRotary's cases: the two spellings fused into
// RotaryEmbedding (with ORTCompat's cache expansion) and the two near misses left alone.
func TestRotaryGolden(t *testing.T) {
	var out strings.Builder
	for _, variant := range []string{"synth", "export", "half-read", "other-sin"} {
		g, _ := passes.RotaryGraph(variant)
		ctx, b := passRun(t, "variant="+variant, g, nil, passes.Rotary, passes.ORTCompat)
		fmt.Fprintf(b, "# fused %d, opset %d\n", ortgraph.ResultOf[*passes.RotaryResult](ctx, passes.Rotary).Fused, g.M.OpsetVersion(""))
		b.WriteString(ortgraph.Dump(g))
		out.WriteString(b.String())
	}
	golden(t, "rotary.txt", out.String())
}

// TestGroupedKVGolden keeps the graph text of TestGroupedKV's cases: both repeats read as
// their kv heads, and the two near misses whose k repeat is left alone.
func TestGroupedKVGolden(t *testing.T) {
	var out strings.Builder
	for _, variant := range []string{"repeat", "k-read", "expand-batch"} {
		g, _ := passes.GroupedKVGraph(variant)
		ctx, b := passRun(t, "variant="+variant, g, nil, passes.GroupedKV)
		fmt.Fprintf(b, "# fused %d\n", ortgraph.ResultOf[*passes.GroupedKVResult](ctx, passes.GroupedKV).Fused)
		b.WriteString(ortgraph.Dump(g))
		out.WriteString(b.String())
	}
	golden(t, "groupedkv.txt", out.String())
}

// TestDocMaskGolden keeps the graph text of DocMask on `ortq import`'s mask and rotary
// idiom (rewritten: the mask restricted to one document, RotaryEmbedding reading
// position_ids from [seq, d/2] tables) and its two near misses, left alone with a reason.
// The rewrite's numbers are checked on real models in prepare (TestPlainMaskUnchanged,
// TestPackedDocumentsIsolated).
func TestDocMaskGolden(t *testing.T) {
	var out strings.Builder
	for _, variant := range []string{"import", "float-mask", "no-mask"} {
		g := passes.DocMaskGraph(variant)
		ctx, b := passRun(t, "variant="+variant, g, nil, passes.DocMask)
		r := ortgraph.ResultOf[*passes.DocMaskResult](ctx, passes.DocMask)
		if r.DocumentIDs() != (variant == "import") || (variant != "import" && len(r.Skipped) == 0) {
			t.Errorf("%s: %+v", variant, r)
		}
		fmt.Fprintf(b, "# masks %d, rotary %d, document ids %v\n", r.Masks, r.Rotary, r.DocumentIDs())
		b.WriteString(ortgraph.Dump(g))
		out.WriteString(b.String())
	}
	golden(t, "docmask.txt", out.String())
}

// TestDeviceStepGolden keeps the tiny decoder's training graph (LoRA on q and v) as a
// device-resident step: flat state in and out, accumulation, overflow check and AdamW.
func TestDeviceStepGolden(t *testing.T) {
	g := tinyLlama(tinyLlamaOpts{})
	opts := passes.RunOptions{
		Quantize: passes.QuantizeOptions{Bits: 16},
		LoRA:     passes.LoRAOptions{Targets: []string{"q_proj", "v_proj"}, Rank: 2, Alpha: 4},
		Loss:     passes.LossOptions{Train: true},
	}
	ctx, b := passRun(t, "lora_qv", g, opts.Options(), passes.LoRA, passes.Loss, passes.Backward, passes.DeviceStep)
	r := ortgraph.ResultOf[*passes.DeviceStepResult](ctx, passes.DeviceStep)
	for _, l := range r.Layout {
		fmt.Fprintf(b, "# layout %s offset=%d size=%d\n", l.Name, l.Offset, l.Size)
	}
	b.WriteString(ortgraph.Dump(g))
	golden(t, "device_step.txt", b.String())
}

// TestDenseBaseGolden keeps the tiny decoder's 4-bit weights after DenseBase: int4 behind
// DQForward (one ungated DequantizeLinear chain per weight and chain shape, the forward
// products FusedMatMul(transB)) and NF4 + double quant behind Bnb4Forward (one ungated copy
// of each weight's Gather chain, no gate left); ONNX Runtime's logits equal the graph's
// before.
func TestDenseBaseGolden(t *testing.T) {
	ortruntest.Lib(t)
	var out strings.Builder
	for _, c := range []struct {
		name  string
		quant quantize.Options
		first *ortgraph.Pass // the pass that makes the 4-bit products' weights chains
		want  int            // weights dequantized once
	}{
		// down_proj (K 24, two blocks): its chain and the Reshape inside it, read by the
		// Slice, both count.
		{"int4", quantize.Options{BlockSize: 16}, passes.DQForward, 8},
		{"nf4 double-quant", quantize.Options{BlockSize: 16, Type: quantize.NF4, DoubleQuant: true}, passes.Bnb4Forward, 7},
	} {
		g := tinyLlama(tinyLlamaOpts{})
		g.M.SetOpset("", 21) // UINT4 DequantizeLinear, as prepare sets it
		opts := ortgraph.Options{passes.Quantize: passes.QuantizeOptions{Bits: 4, Quant: c.quant}}
		if _, err := ortgraph.RunPasses(g, opts, nil, passes.Quantize, c.first); err != nil {
			t.Fatal(err)
		}
		ctx, b, before := passRunFrom(t, c.name, g, opts, passes.DenseBase)
		if res := ortgraph.ResultOf[*passes.DenseBaseResult](ctx, passes.DenseBase); res.Weights != c.want {
			t.Errorf("%s: %d weights dequantized once, want %d", c.name, res.Weights, c.want)
		}
		for _, n := range g.P.Node {
			if n.OpType == "Where" || n.OpType == "MatMulBnb4" {
				t.Errorf("%s: %s %q left after DenseBase", c.name, n.OpType, n.Name)
			}
		}
		b.WriteString(ortgraph.Dump(g))
		out.WriteString(b.String())
		sameOutputs(t, c.name, before, g, 1e-5, tinyLogits)
	}
	golden(t, "densebase.txt", out.String())
}
