package hfimport

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/quantize"
)

// Opset and IR version of the decomposed graphs built here (DequantizeLinear with UINT4
// blocks, which prepare adds later, needs opset 21 and IR 10), and of the fused ones
// (Attention, RMSNormalization and RotaryEmbedding are opset 23, which goes with IR 11).
const (
	Opset          = 21
	IRVersion      = 10
	FusedOpset     = 23
	FusedIRVersion = 11
)

// Ops says how the graph spells RMSNorm, rotary and attention.
type Ops int

const (
	// Decomposed: opset 21 primitives, node for node what transformers' eager code does
	// (RMSNorm as Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul in float32, rotary as
	// Slice/Neg/Concat/Mul/Add, attention as MatMul/Softmax/MatMul with an explicit GQA
	// repeat). The reference form: every op is in every runtime, exact to the reference.
	Decomposed Ops = iota
	// Fused: opset 23 RMSNormalization (stash_type 1: float32 inside, like LlamaRMSNorm),
	// RotaryEmbedding (position_ids form) and Attention (4-D Q/K/V, GQA by head count,
	// the same additive causal+padding mask). About a third of the nodes per layer and no
	// [batch, heads, seq, seq] tensor in the forward; ORT runs the three ops on CUDA.
	Fused
)

func (o Ops) String() string {
	if o == Fused {
		return "fused"
	}
	return "decomposed"
}

// ParseOps maps an --ops value to Ops; "" is Decomposed, the default of both import and
// synth. Measured on an H200 (Llama-3.2-3B shape, micro-batch 7 × 512, 4-bit, recompute),
// ortq trains the fused graph at 677 tokens/s against 7,460 for the decomposed one: the
// fused forward is faster, but ONNX Runtime 1.29's CUDA path for the opset-23 ops (attention
// with a mask and GQA) made the training step ten times slower.
func ParseOps(s string) (Ops, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "fused", "opset23", "23":
		return Fused, nil
	case "", "decomposed", "opset21", "21":
		return Decomposed, nil
	}
	return 0, fmt.Errorf("--ops %q: use fused (opset-23 Attention, RMSNormalization, RotaryEmbedding) or decomposed (opset-21 primitives)", s)
}

// initKind says how `synth` fills a weight (HF's _init_weights).
type initKind int

const (
	initNormal initKind = iota // N(0, initializer_range): Linear and Embedding weights
	initOnes                   // RMSNorm weights
	initZeros                  // biases
)

// Weight is one checkpoint tensor as it appears in the graph.
type Weight struct {
	Name      string  // initializer name = Hugging Face state-dict name
	HFShape   []int64 // shape in the checkpoint (Linear: [out, in])
	Dims      []int64 // shape in the graph (Linear: [in, out])
	Transpose bool    // graph layout is the transpose of the checkpoint's
	init      initKind
	T         *onnxpb.TensorProto
	// Quant, when set, stores the Linear weight 4-bit for com.microsoft.MatMulNBits: T is
	// then the packed B (uint8 [N, blocks, block/2]), Scales its scales ([N, blocks]) and
	// ZeroPoints, when asymmetric, its packed zero points ([N, ⌈blocks/2⌉]);
	// Dims and NumElements still describe the full-precision values the writer generates.
	// NF4/FP4 (Quant.Type): T is MatMulBnb4's B (uint8 [N·K/2]) and Scales the absmax
	// values; double-quantized, Scales holds their 8-bit codes, ZeroPoints the float32 scale
	// per 256 blocks and Offset the float32 offset (quantize.NestedAbsmax).
	Quant      *quantize.Options
	Scales     *onnxpb.TensorProto
	ZeroPoints *onnxpb.TensorProto // asymmetric int4, or double-quantized NF4/FP4
	Offset     *onnxpb.TensorProto // double-quantized NF4/FP4 only
}

// NumElements of the weight.
func (w *Weight) NumElements() int64 { return ortgraph.NumElements(w.Dims) }

// lowest is the most negative finite value of a float type (torch.finfo(dtype).min).
func lowest(dt int32) float32 {
	if dt == ortgraph.Float16 {
		return -65504
	}
	return -math.MaxFloat32
}

// builder emits the graph; every value gets its type recorded (the autodiff reads ranks from
// value_info).
type builder struct {
	g       *ortgraph.Graph
	c       *Config
	dt      int32
	fused   bool
	posIDs  string // fused: RotaryEmbedding's position_ids [batch, seq]
	weights []*Weight
	quant   *quantize.Options // decoder Linears as 4-bit MatMulNBits (synth --quantize)
}

func sym(elem int32, dims ...string) *onnxpb.TypeProto { return ortgraph.SymTensorType(elem, dims) }

func itoa(v int) string { return strconv.Itoa(v) }

// node adds a single-output node named name and records its output type.
func (b *builder) node(name, op string, in []string, typ *onnxpb.TypeProto, attrs ...ortgraph.Attr) string {
	out := b.g.Add(ortgraph.NodeSpec{Op: op, Inputs: in, Attrs: attrs, Name: name})[0]
	b.g.SetType(out, typ)
	return out
}

// weight declares a checkpoint tensor as a graph initializer; its data is attached later
// (external or inline).
func (b *builder) weight(name string, hfShape []int64, transpose bool, kind initKind) string {
	w := b.declare(name, hfShape, transpose, kind)
	w.T = &onnxpb.TensorProto{Name: name, DataType: b.dt, Dims: w.Dims}
	b.g.AddInitializer(w.T)
	return name
}

// declare records a checkpoint tensor the writer will generate or read; the caller gives it
// its graph tensor(s).
func (b *builder) declare(name string, hfShape []int64, transpose bool, kind initKind) *Weight {
	dims := append([]int64(nil), hfShape...)
	if transpose {
		dims[0], dims[1] = hfShape[1], hfShape[0]
	}
	w := &Weight{Name: name, HFShape: hfShape, Dims: dims, Transpose: transpose, init: kind}
	b.weights = append(b.weights, w)
	return w
}

// Build returns the decomposed Llama graph for c in element type dt (ortgraph.Float or
// Float16) and the weights it reads, in checkpoint order of use. The weights'
// TensorProtos carry no data yet.
func Build(c *Config, dt int32) (*ortgraph.Model, []*Weight, error) {
	return BuildOps(c, dt, Decomposed)
}

// BuildOps is Build with the choice of op set. Both forms declare the same weights in the
// same order (synth's per-tensor random streams, and so its bytes, do not depend on ops).
func BuildOps(c *Config, dt int32, ops Ops) (*ortgraph.Model, []*Weight, error) {
	return buildOps(c, dt, ops, nil)
}

// buildOps is BuildOps with the decoder Linears optionally 4-bit (quant non-nil).
func buildOps(c *Config, dt int32, ops Ops, quant *quantize.Options) (*ortgraph.Model, []*Weight, error) {
	if dt != ortgraph.Float && dt != ortgraph.Float16 {
		return nil, nil, fmt.Errorf("graph dtype %s: float32 or float16 only", ortgraph.DTypeName(dt))
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	ir, opset := int64(IRVersion), int64(Opset)
	if ops == Fused {
		ir, opset = FusedIRVersion, FusedOpset
	}
	mp := &onnxpb.ModelProto{
		IrVersion:       ir,
		ProducerName:    "ortq hfimport",
		ProducerVersion: "1",
		OpsetImport:     []*onnxpb.OperatorSetIdProto{{Domain: "", Version: opset}},
		Graph:           &onnxpb.GraphProto{Name: "llama"},
		// The graph itself has no position limit (rotary angles are computed from the
		// positions), so the model's context length travels in its metadata too: prepare
		// bounds --max-seq-len with it when no config.json sits beside the graph.
		MetadataProps: []*onnxpb.StringStringEntryProto{{Key: ortgraph.MetaMaxPositions, Value: strconv.Itoa(c.MaxPositions)}},
	}
	m := &ortgraph.Model{P: mp}
	b := &builder{g: ortgraph.NewGraph(m), c: c, dt: dt, fused: ops == Fused, quant: quant}
	if quant != nil {
		m.SetOpset("com.microsoft", 1)
	}
	b.build()
	return m, b.weights, nil
}

func (b *builder) build() {
	g, c, dt := b.g, b.c, b.dt
	H, V := int64(c.HiddenSize), int64(c.VocabSize)
	hd := int64(c.HeadDim)
	g.P.Input = []*onnxpb.ValueInfoProto{
		{Name: "input_ids", Type: sym(ortgraph.Int64, "batch", "seq")},
		{Name: "attention_mask", Type: sym(ortgraph.Int64, "batch", "seq")},
	}
	g.Reindex()

	embed := b.weight("model.embed_tokens.weight", []int64{V, H}, false, initNormal)
	h := b.node("/model/embed_tokens/Gather", "Gather", []string{embed, "input_ids"}, sym(dt, "batch", "seq", itoa(c.HiddenSize)), ortgraph.AInt("axis", 0))

	// Positions 0..seq-1 (what LlamaModel uses when no position_ids are given).
	shape := b.node("/model/rotary_emb/Shape", "Shape", []string{"input_ids"}, ortgraph.TensorType(ortgraph.Int64, []int64{2}))
	seqLen := b.node("/model/rotary_emb/Gather", "Gather", []string{shape, g.ScalarI64(1)}, ortgraph.TensorType(ortgraph.Int64, []int64{}),
		ortgraph.AInt("axis", 0))
	pos := b.node("/model/rotary_emb/Range", "Range", []string{g.ScalarI64(0), seqLen, g.ScalarI64(1)}, sym(ortgraph.Int64, "seq"))

	// Rotary cos/sin, computed in float32 and cast to the graph dtype (HF). Decomposed:
	// [seq, head_dim] (cos(cat(freqs, freqs)), as HF). Fused: RotaryEmbedding's position_ids
	// form, a [seq, head_dim/2] table indexed by position_ids [batch, seq]; with no
	// position_ids the op wants [batch, seq, head_dim/2] caches, which ORT 1.29 insists be
	// batch-sized (see passes.ORTCompat), costing an Expand per cache per node.
	invFreq := g.AddInitializer(ortgraph.FloatTensor("model.rotary_emb.inv_freq", ortgraph.Float, []int64{hd / 2}, InvFreq(c.HeadDim, c.Rope)))
	posF := b.node("/model/rotary_emb/Cast", "Cast", []string{pos}, sym(ortgraph.Float, "seq"), ortgraph.AInt("to", int64(ortgraph.Float)))
	posCol := b.node("/model/rotary_emb/Unsqueeze", "Unsqueeze", []string{posF, g.ConstI64(1)}, sym(ortgraph.Float, "seq", "1"))
	freqs := b.node("/model/rotary_emb/Mul", "Mul", []string{posCol, invFreq}, sym(ortgraph.Float, "seq", itoa(int(hd/2))))
	emb, width := freqs, hd/2
	if !b.fused {
		emb, width = b.node("/model/rotary_emb/Concat", "Concat", []string{freqs, freqs}, sym(ortgraph.Float, "seq", itoa(int(hd))), ortgraph.AInt("axis", -1)), hd
	}
	cos := b.node("/model/rotary_emb/Cos", "Cos", []string{emb}, sym(ortgraph.Float, "seq", itoa(int(width))))
	sin := b.node("/model/rotary_emb/Sin", "Sin", []string{emb}, sym(ortgraph.Float, "seq", itoa(int(width))))
	if dt != ortgraph.Float {
		cos = b.node("/model/rotary_emb/Cast_cos", "Cast", []string{cos}, sym(dt, "seq", itoa(int(width))), ortgraph.AInt("to", int64(dt)))
		sin = b.node("/model/rotary_emb/Cast_sin", "Cast", []string{sin}, sym(dt, "seq", itoa(int(width))), ortgraph.AInt("to", int64(dt)))
	}
	if b.fused {
		row := b.node("/model/rotary_emb/Unsqueeze_pos", "Unsqueeze", []string{pos, g.ConstI64(0)}, sym(ortgraph.Int64, "1", "seq"))
		b.posIDs = b.node("/model/rotary_emb/Expand_pos", "Expand", []string{row, shape}, sym(ortgraph.Int64, "batch", "seq"))
	}

	// Additive mask [batch, 1, seq, seq]: 0 where key ≤ query and the key is not padding (or
	// key = query, so no row is fully masked), the dtype's lowest finite value elsewhere.
	qi := b.node("/model/mask/Unsqueeze_q", "Unsqueeze", []string{pos, g.ConstI64(1)}, sym(ortgraph.Int64, "seq", "1"))
	ki := b.node("/model/mask/Unsqueeze_k", "Unsqueeze", []string{pos, g.ConstI64(0)}, sym(ortgraph.Int64, "1", "seq"))
	causal := b.node("/model/mask/LessOrEqual", "LessOrEqual", []string{ki, qi}, sym(ortgraph.Bool, "seq", "seq"))
	diag := b.node("/model/mask/Equal", "Equal", []string{ki, qi}, sym(ortgraph.Bool, "seq", "seq"))
	keyOK := b.node("/model/mask/Cast", "Cast", []string{"attention_mask"}, sym(ortgraph.Bool, "batch", "seq"), ortgraph.AInt("to", int64(ortgraph.Bool)))
	keyOK4 := b.node("/model/mask/Unsqueeze", "Unsqueeze", []string{keyOK, g.ConstI64(1, 2)}, sym(ortgraph.Bool, "batch", "1", "1", "seq"))
	allowed := b.node("/model/mask/And", "And", []string{causal, keyOK4}, sym(ortgraph.Bool, "batch", "1", "seq", "seq"))
	allowed = b.node("/model/mask/Or", "Or", []string{allowed, diag}, sym(ortgraph.Bool, "batch", "1", "seq", "seq"))
	mask := b.node("/model/mask/Where", "Where", []string{allowed, g.ConstF(dt, 0), g.ConstF(dt, lowest(dt))}, sym(dt, "batch", "1", "seq", "seq"))

	for l := 0; l < c.NumLayers; l++ {
		h = b.layer(l, h, cos, sin, mask)
	}
	h = b.rmsNorm("/model/norm", "model.norm.weight", h)

	var head string
	if c.TieWordEmbeddings {
		// lm_head reads the embedding through a Transpose: one copy of the table on disk;
		// passes.FindLinears sees a Transpose-of-initializer Linear named by its node.
		head = b.node("/lm_head/Transpose", "Transpose", []string{embed}, ortgraph.TensorType(dt, []int64{H, V}), ortgraph.AInts("perm", 1, 0))
	} else {
		head = b.weight("lm_head.weight", []int64{V, H}, true, initNormal)
	}
	out := g.Add(ortgraph.NodeSpec{Op: "MatMul", Inputs: []string{h, head}, Name: "/lm_head/MatMul"})
	n := g.Producer(out[0])
	n.Output[0] = "logits"
	g.P.Output = []*onnxpb.ValueInfoProto{{Name: "logits", Type: sym(dt, "batch", "seq", itoa(c.VocabSize))}}
	g.Reindex()
}

// linear emits MatMul(x, W[in,out]) (+ bias) for the HF module path mod.
func (b *builder) linear(mod string, x string, in, out int64, bias bool, outDims ...string) string {
	path := "/" + dots(mod)
	var y string
	if b.quant != nil {
		// What prepare's quantize pass would write (same packing, same names' module
		// paths in the node name), so prepare takes it as is and no full-precision copy
		// of the weight is ever on disk.
		wt := b.declare(mod+".weight", []int64{out, in}, true, initNormal)
		if b.quant.Type.IsBnb4() {
			y = b.bnb4Linear(wt, mod, path, x, in, out, outDims)
			return b.withBias(mod, y, bias, out, outDims)
		}
		bs := int64(b.quant.BlockSize)
		blocks := (in + bs - 1) / bs
		wt.Quant = b.quant
		wt.T = &onnxpb.TensorProto{Name: mod + ".weight_q4", DataType: ortgraph.Uint8, Dims: []int64{out, blocks, bs / 2}}
		wt.Scales = &onnxpb.TensorProto{Name: mod + ".weight_scales", DataType: b.dt, Dims: []int64{out, blocks}}
		b.g.AddInitializer(wt.T)
		b.g.AddInitializer(wt.Scales)
		ins := []string{x, wt.T.Name, wt.Scales.Name}
		if b.quant.Asymmetric {
			// Packed uint8 zero points, two blocks per byte (MatMulNBits' layout).
			wt.ZeroPoints = &onnxpb.TensorProto{Name: mod + ".weight_zero_points", DataType: ortgraph.Uint8, Dims: []int64{out, (blocks + 1) / 2}}
			b.g.AddInitializer(wt.ZeroPoints)
			ins = append(ins, wt.ZeroPoints.Name)
		}
		y = b.g.Add(ortgraph.NodeSpec{Op: "MatMulNBits", Domain: "com.microsoft", Name: path + "/MatMulNBits", Inputs: ins,
			Attrs: []ortgraph.Attr{ortgraph.AInt("K", in), ortgraph.AInt("N", out), ortgraph.AInt("bits", 4), ortgraph.AInt("block_size", bs),
				ortgraph.AInt("accuracy_level", 0)}})[0]
		b.g.SetType(y, sym(b.dt, outDims...))
	} else {
		w := b.weight(mod+".weight", []int64{out, in}, true, initNormal)
		y = b.node(path+"/MatMul", "MatMul", []string{x, w}, sym(b.dt, outDims...))
	}
	return b.withBias(mod, y, bias, out, outDims)
}

// withBias adds module mod's bias to y when it has one.
func (b *builder) withBias(mod, y string, bias bool, out int64, outDims []string) string {
	if bias {
		bb := b.weight(mod+".bias", []int64{out}, false, initZeros)
		y = b.node("/"+dots(mod)+"/Add", "Add", []string{y, bb}, sym(b.dt, outDims...))
	}
	return y
}

// bnb4Linear declares wt as an NF4/FP4 weight (bitsandbytes' layout: B uint8 [out·in/2],
// absmax [out·in/block] in the model's type, filled when the weights are written) and emits
// MatMulBnb4, as prepare --quant nf4|fp4 writes it.
func (b *builder) bnb4Linear(wt *Weight, mod, path, x string, in, out int64, outDims []string) string {
	bs := int64(b.quant.BlockSize)
	wt.Quant = b.quant
	wt.T = &onnxpb.TensorProto{Name: mod + ".weight_" + string(b.quant.Type), DataType: ortgraph.Uint8, Dims: []int64{out * in / 2}}
	b.g.AddInitializer(wt.T)
	blocks := out * in / bs
	absmax := mod + ".weight_absmax"
	var meta []*onnxpb.StringStringEntryProto
	if b.quant.DoubleQuant {
		nb2 := (blocks + quantize.NestedBlockSize - 1) / quantize.NestedBlockSize
		wt.Scales = &onnxpb.TensorProto{Name: mod + ".weight_absmax_codes", DataType: ortgraph.Uint8, Dims: []int64{nb2 * quantize.NestedBlockSize}}
		wt.ZeroPoints = &onnxpb.TensorProto{Name: mod + ".weight_absmax_scales", DataType: ortgraph.Float, Dims: []int64{nb2, 1}}
		wt.Offset = &onnxpb.TensorProto{Name: mod + ".weight_absmax_offset", DataType: ortgraph.Float}
		for _, t := range []*onnxpb.TensorProto{wt.Scales, wt.ZeroPoints, wt.Offset} {
			b.g.AddInitializer(t)
		}
		saved := b.g.Scope
		b.g.Scope = path + "/bnb4"
		absmax = autodiff.Bnb4Absmax(b.g, wt.Scales.Name, wt.ZeroPoints.Name, wt.Offset.Name, blocks, autodiff.Bnb4Gate(b.g, x), b.dt)
		b.g.Scope = saved
		meta = []*onnxpb.StringStringEntryProto{{Key: autodiff.Bnb4NestedKey, Value: wt.Scales.Name + "," + wt.ZeroPoints.Name + "," + wt.Offset.Name}}
	} else {
		wt.Scales = &onnxpb.TensorProto{Name: absmax, DataType: b.dt, Dims: []int64{blocks}}
		b.g.AddInitializer(wt.Scales)
	}
	qt := int64(1)
	if b.quant.Type == quantize.FP4 {
		qt = 0
	}
	y := b.g.Add(ortgraph.NodeSpec{Op: "MatMulBnb4", Domain: "com.microsoft", Name: path + "/MatMulBnb4", Inputs: []string{x, wt.T.Name, absmax},
		Attrs: []ortgraph.Attr{ortgraph.AInt("K", in), ortgraph.AInt("N", out), ortgraph.AInt("block_size", bs), ortgraph.AInt("quant_type", qt)}})[0]
	b.g.Producer(y).MetadataProps = meta
	b.g.SetType(y, sym(b.dt, outDims...))
	return y
}

// dots turns "model.layers.0.self_attn.q_proj" into the exporter-style node path
// "model/layers.0/self_attn/q_proj".
func dots(mod string) string {
	out := []byte{}
	parts := splitDots(mod)
	for i, p := range parts {
		if i > 0 {
			if _, err := strconv.Atoi(p); err == nil {
				out = append(out, '.')
			} else {
				out = append(out, '/')
			}
		}
		out = append(out, p...)
	}
	return string(out)
}

func splitDots(s string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// rmsNorm is LlamaRMSNorm: in float32, x * 1/sqrt(mean(x²) + eps), cast back, times weight.
func (b *builder) rmsNorm(path, wname, x string) string {
	c, g, dt := b.c, b.g, b.dt
	Hs := itoa(c.HiddenSize)
	w := b.weight(wname, []int64{int64(c.HiddenSize)}, false, initOnes)
	if b.fused {
		// stash_type 1: mean(x²), the reciprocal root and the product with x in float32,
		// cast to T before the weight is applied, which is LlamaRMSNorm's order.
		return b.node(path+"/RMSNormalization", "RMSNormalization", []string{x, w}, sym(dt, "batch", "seq", Hs),
			ortgraph.AInt("axis", -1), ortgraph.AFloat("epsilon", float32(c.RMSNormEps)), ortgraph.AInt("stash_type", 1))
	}
	x32 := x
	if dt != ortgraph.Float {
		x32 = b.node(path+"/Cast", "Cast", []string{x}, sym(ortgraph.Float, "batch", "seq", Hs), ortgraph.AInt("to", int64(ortgraph.Float)))
	}
	sq := b.node(path+"/Pow", "Pow", []string{x32, g.ConstF(ortgraph.Float, 2)}, sym(ortgraph.Float, "batch", "seq", Hs))
	mean := b.node(path+"/ReduceMean", "ReduceMean", []string{sq, g.ConstI64(-1)}, sym(ortgraph.Float, "batch", "seq", "1"), ortgraph.AInt("keepdims", 1))
	v := b.node(path+"/Add", "Add", []string{mean, g.ConstF(ortgraph.Float, float32(c.RMSNormEps))}, sym(ortgraph.Float, "batch", "seq", "1"))
	s := b.node(path+"/Sqrt", "Sqrt", []string{v}, sym(ortgraph.Float, "batch", "seq", "1"))
	r := b.node(path+"/Reciprocal", "Reciprocal", []string{s}, sym(ortgraph.Float, "batch", "seq", "1"))
	y := b.node(path+"/Mul", "Mul", []string{x32, r}, sym(ortgraph.Float, "batch", "seq", Hs))
	if dt != ortgraph.Float {
		y = b.node(path+"/Cast_1", "Cast", []string{y}, sym(dt, "batch", "seq", Hs), ortgraph.AInt("to", int64(dt)))
	}
	return b.node(path+"/Mul_1", "Mul", []string{w, y}, sym(dt, "batch", "seq", Hs))
}

// rotate applies q*cos + rotate_half(q)*sin to x [batch, heads, seq, hd].
func (b *builder) rotate(path, x, cos, sin string, heads int64) string {
	g, dt := b.g, b.dt
	hd := int64(b.c.HeadDim)
	full := sym(dt, "batch", itoa(int(heads)), "seq", itoa(int(hd)))
	half := sym(dt, "batch", itoa(int(heads)), "seq", itoa(int(hd/2)))
	x1 := b.node(path+"/Slice", "Slice", []string{x, g.ConstI64(0), g.ConstI64(hd / 2), g.ConstI64(3)}, half)
	x2 := b.node(path+"/Slice_1", "Slice", []string{x, g.ConstI64(hd / 2), g.ConstI64(hd), g.ConstI64(3)}, half)
	neg := b.node(path+"/Neg", "Neg", []string{x2}, half)
	rot := b.node(path+"/Concat", "Concat", []string{neg, x1}, full, ortgraph.AInt("axis", -1))
	a := b.node(path+"/Mul", "Mul", []string{x, cos}, full)
	r := b.node(path+"/Mul_1", "Mul", []string{rot, sin}, full)
	return b.node(path+"/Add", "Add", []string{a, r}, full)
}

func (b *builder) layer(l int, h, cos, sin, mask string) string {
	c, g, dt := b.c, b.g, b.dt
	H := int64(c.HiddenSize)
	nH, nKV, hd := int64(c.NumHeads), int64(c.NumKVHeads), int64(c.HeadDim)
	mod := "model.layers." + itoa(l)
	path := "/model/layers." + itoa(l)
	att := path + "/self_attn"

	x := b.rmsNorm(path+"/input_layernorm", mod+".input_layernorm.weight", h)
	q := b.linear(mod+".self_attn.q_proj", x, H, nH*hd, c.AttentionBias, "batch", "seq", itoa(int(nH*hd)))
	k := b.linear(mod+".self_attn.k_proj", x, H, nKV*hd, c.AttentionBias, "batch", "seq", itoa(int(nKV*hd)))
	v := b.linear(mod+".self_attn.v_proj", x, H, nKV*hd, c.AttentionBias, "batch", "seq", itoa(int(nKV*hd)))
	heads := func(name, x string, n int64) string {
		r := b.node(att+"/Reshape_"+name, "Reshape", []string{x, g.ConstI64(0, 0, n, hd)}, sym(dt, "batch", "seq", itoa(int(n)), itoa(int(hd))))
		return b.node(att+"/Transpose_"+name, "Transpose", []string{r}, sym(dt, "batch", itoa(int(n)), "seq", itoa(int(hd))), ortgraph.AInts("perm", 0, 2, 1, 3))
	}
	q, k, v = heads("q", q, nH), heads("k", k, nKV), heads("v", v, nKV)
	if b.fused {
		// RotaryEmbedding on [batch, heads, seq, hd]; interleaved 0 is rotate_half.
		rot := func(name, x string, n int64) string {
			return b.node(att+"/"+name+"/RotaryEmbedding", "RotaryEmbedding", []string{x, cos, sin, b.posIDs},
				sym(dt, "batch", itoa(int(n)), "seq", itoa(int(hd))), ortgraph.AInt("interleaved", 0))
		}
		q, k = rot("rotary_q", q, nH), rot("rotary_k", k, nKV)
		// GQA by head count (K/V keep nKV heads); the mask is the same additive
		// causal+padding mask as the decomposed graph's, so both agree row for row.
		o := b.node(att+"/Attention", "Attention", []string{q, k, v, mask}, sym(dt, "batch", itoa(int(nH)), "seq", itoa(int(hd))),
			ortgraph.AFloat("scale", float32(math.Pow(float64(hd), -0.5))))
		return b.finishLayer(l, h, o)
	}
	q = b.rotate(att+"/rotary_q", q, cos, sin, nH)
	k = b.rotate(att+"/rotary_k", k, cos, sin, nKV)
	if rep := nH / nKV; rep > 1 {
		// repeat_kv: [b, kv, s, d] → [b, kv, 1, s, d] → expand [b, kv, rep, s, d] → [b, kv·rep, s, d].
		repeat := func(name, x string) string {
			u := b.node(att+"/repeat_kv/Unsqueeze_"+name, "Unsqueeze", []string{x, g.ConstI64(2)}, sym(dt, "batch", itoa(int(nKV)), "1", "seq", itoa(int(hd))))
			e := b.node(att+"/repeat_kv/Expand_"+name, "Expand", []string{u, g.ConstI64(1, 1, rep, 1, 1)},
				sym(dt, "batch", itoa(int(nKV)), itoa(int(rep)), "seq", itoa(int(hd))))
			return b.node(att+"/repeat_kv/Reshape_"+name, "Reshape", []string{e, g.ConstI64(0, nH, -1, hd)}, sym(dt, "batch", itoa(int(nH)), "seq", itoa(int(hd))))
		}
		k, v = repeat("k", k), repeat("v", v)
	}
	kt := b.node(att+"/Transpose_kt", "Transpose", []string{k}, sym(dt, "batch", itoa(int(nH)), itoa(int(hd)), "seq"), ortgraph.AInts("perm", 0, 1, 3, 2))
	scoresT := sym(dt, "batch", itoa(int(nH)), "seq", "seq")
	s := b.node(att+"/MatMul", "MatMul", []string{q, kt}, scoresT)
	s = b.node(att+"/Mul", "Mul", []string{s, g.ConstF(dt, float32(math.Pow(float64(hd), -0.5)))}, scoresT)
	s = b.node(att+"/Add", "Add", []string{s, mask}, scoresT)
	var p string
	if dt == ortgraph.Float {
		p = b.node(att+"/Softmax", "Softmax", []string{s}, scoresT, ortgraph.AInt("axis", -1))
	} else {
		// softmax(dtype=float32).to(q.dtype), as HF's eager attention.
		s32 := b.node(att+"/Cast", "Cast", []string{s}, sym(ortgraph.Float, "batch", itoa(int(nH)), "seq", "seq"), ortgraph.AInt("to", int64(ortgraph.Float)))
		p32 := b.node(att+"/Softmax", "Softmax", []string{s32}, sym(ortgraph.Float, "batch", itoa(int(nH)), "seq", "seq"), ortgraph.AInt("axis", -1))
		p = b.node(att+"/Cast_1", "Cast", []string{p32}, scoresT, ortgraph.AInt("to", int64(dt)))
	}
	o := b.node(att+"/MatMul_1", "MatMul", []string{p, v}, sym(dt, "batch", itoa(int(nH)), "seq", itoa(int(hd))))
	return b.finishLayer(l, h, o)
}

// finishLayer takes the attention output o [batch, heads, seq, hd] through o_proj, the
// residual and the MLP.
func (b *builder) finishLayer(l int, h, o string) string {
	c, g, dt := b.c, b.g, b.dt
	H, I := int64(c.HiddenSize), int64(c.IntermediateSize)
	nH, hd := int64(c.NumHeads), int64(c.HeadDim)
	Hs, Is := itoa(c.HiddenSize), itoa(c.IntermediateSize)
	mod := "model.layers." + itoa(l)
	path := "/model/layers." + itoa(l)
	att := path + "/self_attn"
	o = b.node(att+"/Transpose_o", "Transpose", []string{o}, sym(dt, "batch", "seq", itoa(int(nH)), itoa(int(hd))), ortgraph.AInts("perm", 0, 2, 1, 3))
	o = b.node(att+"/Reshape_o", "Reshape", []string{o, g.ConstI64(0, 0, nH*hd)}, sym(dt, "batch", "seq", itoa(int(nH*hd))))
	o = b.linear(mod+".self_attn.o_proj", o, nH*hd, H, c.AttentionBias, "batch", "seq", Hs)
	h = b.node(path+"/Add", "Add", []string{h, o}, sym(dt, "batch", "seq", Hs))

	x := b.rmsNorm(path+"/post_attention_layernorm", mod+".post_attention_layernorm.weight", h)
	gate := b.linear(mod+".mlp.gate_proj", x, H, I, c.MLPBias, "batch", "seq", Is)
	up := b.linear(mod+".mlp.up_proj", x, H, I, c.MLPBias, "batch", "seq", Is)
	sg := b.node(path+"/mlp/act_fn/Sigmoid", "Sigmoid", []string{gate}, sym(dt, "batch", "seq", Is))
	act := b.node(path+"/mlp/act_fn/Mul", "Mul", []string{gate, sg}, sym(dt, "batch", "seq", Is))
	prod := b.node(path+"/mlp/Mul", "Mul", []string{act, up}, sym(dt, "batch", "seq", Is))
	down := b.linear(mod+".mlp.down_proj", prod, I, H, c.MLPBias, "batch", "seq", Hs)
	return b.node(path+"/Add_1", "Add", []string{h, down}, sym(dt, "batch", "seq", Hs))
}
