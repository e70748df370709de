package export

import (
	"fmt"
	"math"
	"strconv"

	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"google.golang.org/protobuf/proto"
)

// Names of the inference graph's inputs and outputs (onnxruntime-genai's Llama layout).
const (
	InputIDs      = "input_ids"
	AttentionMask = "attention_mask"
	PositionIDs   = "position_ids"
	Logits        = "logits"
)

// PastKey and the other three name layer i's cache inputs and outputs.
func PastKey(i int) string    { return "past_key_values." + strconv.Itoa(i) + ".key" }
func PastValue(i int) string  { return "past_key_values." + strconv.Itoa(i) + ".value" }
func PresentKey(i int) string { return "present." + strconv.Itoa(i) + ".key" }

// PresentValue names layer i's value cache output.
func PresentValue(i int) string { return "present." + strconv.Itoa(i) + ".value" }

// LoRAMode says how the adapter enters the graph.
type LoRAMode int

const (
	// LoRANone: the base model alone.
	LoRANone LoRAMode = iota
	// LoRASeparate: A and B as initializers, y = base(x) + (α/r)·(x·Aᵀ)·Bᵀ (exact).
	LoRASeparate
	// LoRAMerged: W + (α/r)·B·A folded into each target Linear's weight.
	LoRAMerged
	// LoRAInputs: A and B as optional graph inputs (zeros by default), for ONNX Runtime's
	// LoRA adapter API.
	LoRAInputs
)

// builder writes the inference graph.
type builder struct {
	s       *Source
	g       *ortgraph.Graph
	dt      int32
	ad      *Adapter
	mode    LoRAMode
	used    map[string]bool // source initializers already copied
	merged  map[string]*onnxpb.TensorProto
	pastLen string         // scalar int64: cached positions (concat layout)
	shared  bool           // KVShared layout (gqa.go)
	fz      fusion         // the fused decode graph (fuse.go)
	params  []AdapterParam // LoRAInputs: the values of the LoRA inputs (loraTensor)
}

func cloneModel(p *onnxpb.ModelProto) *onnxpb.ModelProto { return proto.Clone(p).(*onnxpb.ModelProto) }

func sym(dt int32, dims ...string) *onnxpb.TypeProto { return ortgraph.SymTensorType(dt, dims) }

// Build returns the KV-cache decoder for s with adapter ad (nil: base only) in mode, in the
// concat layout.
func Build(s *Source, ad *Adapter, mode LoRAMode) (*ortgraph.Model, error) {
	m, _, err := BuildLayout(s, ad, mode, KVConcat, false)
	return m, err
}

// Built says what a build did beyond its graph: the fusions of the shared layout's decode
// graph (fuse.go) it applied (FuseQKV, FuseLoRA, FuseSkipNorm) and why it left others out,
// and, in LoRAInputs mode, the LoRA tensors its graph reads as inputs, in the layout the graph
// expects: the .onnx_adapter's contents (PEFT's A and B per target unfused; the fused
// graph's packed, scaled tensors otherwise).
type Built struct {
	Applied       []string
	Notes         []string
	AdapterParams []AdapterParam
}

// BuildLayout is Build with the KV-cache layout kv (KVConcat or KVShared); fuse writes the
// shared layout's fused decode graph (fuse.go; the concat layout is never fused). The
// model's Dir is the artifacts directory, so copied initializers resolve into weights.bin.
func BuildLayout(s *Source, ad *Adapter, mode LoRAMode, kv string, fuse bool) (*ortgraph.Model, Built, error) {
	if kv == KVShared {
		if err := checkShared(s); err != nil {
			return nil, Built{}, err
		}
	}
	if ad == nil {
		mode = LoRANone
	}
	mp := &onnxpb.ModelProto{
		IrVersion:    s.Eval.P.IrVersion,
		ProducerName: "ortq export", ProducerVersion: "1",
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}, {Domain: "com.microsoft", Version: 1}},
		Graph:       &onnxpb.GraphProto{Name: "llama_kv"},
	}
	if mp.IrVersion < 10 {
		mp.IrVersion = 10
	}
	m := &ortgraph.Model{P: mp, Dir: s.Eval.Dir}
	b := &builder{s: s, g: ortgraph.NewGraph(m), dt: s.DType, ad: ad, mode: mode, used: map[string]bool{}, shared: kv == KVShared,
		fz: fusion{on: fuse && kv == KVShared, done: map[string]bool{}}}
	if mode == LoRAMerged {
		var err error
		if b.merged, err = mergedWeights(s, ad); err != nil {
			return nil, Built{}, err
		}
	}
	if err := b.build(); err != nil {
		return nil, Built{}, err
	}
	b.metadata()
	return m, Built{Applied: b.fz.applied(), Notes: b.fz.notes, AdapterParams: b.params}, nil
}

func (b *builder) build() error {
	c, g, dt := b.s.Cfg, b.g, b.dt
	// Logits are float32 whatever the graph's type (a float16 graph casts them, exactly):
	// sampling reads them as float32, and onnxruntime_go returns no float16 tensor it
	// allocated itself (a device-resident run's logits are such a tensor).
	g.P.Output = []*onnxpb.ValueInfoProto{{Name: Logits, Type: sym(ortgraph.Float, "batch_size", "sequence_length", strconv.Itoa(c.VocabSize))}}
	var cos, sin, mask string
	if b.shared {
		b.sharedInputs()
	} else {
		cos, sin, mask = b.concatInputs()
	}
	h := g.Add(ortgraph.NodeSpec{Op: "Gather", Inputs: []string{b.copyInit(b.s.Embed), InputIDs}, Attrs: []ortgraph.Attr{ortgraph.AInt("axis", 0)},
		Name: "/model/embed_tokens/Gather"})[0]
	d := ""
	for l := 0; l < c.NumLayers; l++ {
		var err error
		if h, d, err = b.layer(l, h, d, cos, sin, mask); err != nil {
			return err
		}
	}
	h, _ = b.addNorm(2*c.NumLayers, h, d)
	y, err := b.linear("lm_head", h)
	if err != nil {
		return err
	}
	if dt != ortgraph.Float {
		y = g.Op("Cast", []string{y}, ortgraph.AInt("to", int64(ortgraph.Float)))
	}
	g.Add(ortgraph.NodeSpec{Op: "Identity", Inputs: []string{y}, Name: "/lm_head/Identity"})
	g.P.Node[len(g.P.Node)-1].Output[0] = Logits
	g.Reindex()
	return g.TopoSort()
}

// concatInputs declares the concat layout's inputs and the logits output, and returns the
// rotary tables and the additive mask every layer reads.
func (b *builder) concatInputs() (cos, sin, mask string) {
	c, g, dt := b.s.Cfg, b.g, b.dt
	kv, hd := strconv.Itoa(c.NumKVHeads), strconv.Itoa(c.HeadDim)
	g.P.Input = []*onnxpb.ValueInfoProto{
		{Name: InputIDs, Type: sym(ortgraph.Int64, "batch_size", "sequence_length")},
		{Name: AttentionMask, Type: sym(ortgraph.Int64, "batch_size", "total_sequence_length")},
		{Name: PositionIDs, Type: sym(ortgraph.Int64, "batch_size", "sequence_length")},
	}
	for i := 0; i < c.NumLayers; i++ {
		for _, n := range []string{PastKey(i), PastValue(i)} {
			g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: n, Type: sym(dt, "batch_size", kv, "past_sequence_length", hd)})
		}
	}
	g.Reindex()
	shape := g.Op("Shape", []string{PastKey(0)})
	b.pastLen = g.Op("Gather", []string{shape, g.ScalarI64(2)}, ortgraph.AInt("axis", 0))
	cos, sin = b.rotary()
	return cos, sin, b.mask()
}

// rotary returns cos and sin [batch, 1, seq, head_dim] of position_ids, computed in float32
// as transformers does (inv_freq × position, then cat(freqs, freqs)), cast to the graph type.
func (b *builder) rotary() (cos, sin string) {
	g, c := b.g, b.s.Cfg
	inv := g.AddInitializer(ortgraph.FloatTensor("rotary.inv_freq", ortgraph.Float, []int64{int64(c.HeadDim / 2)}, hfimport.InvFreq(c.HeadDim, c.Rope)))
	pos := g.Op("Cast", []string{PositionIDs}, ortgraph.AInt("to", int64(ortgraph.Float)))
	pos = g.Op("Unsqueeze", []string{pos, g.ConstI64(-1)})
	freqs := g.Op("Mul", []string{pos, inv})
	emb := g.Op("Concat", []string{freqs, freqs}, ortgraph.AInt("axis", -1))
	emb = g.Op("Unsqueeze", []string{emb, g.ConstI64(1)})
	cos, sin = g.Op("Cos", []string{emb}), g.Op("Sin", []string{emb})
	if b.dt != ortgraph.Float {
		cos = g.Op("Cast", []string{cos}, ortgraph.AInt("to", int64(b.dt)))
		sin = g.Op("Cast", []string{sin}, ortgraph.AInt("to", int64(b.dt)))
	}
	return cos, sin
}

// mask is the additive [batch, 1, seq, past+seq] mask: query i (absolute index past+i)
// sees key j when j ≤ past+i and attention_mask[j] is 1, and always sees itself, so a padded
// row never becomes NaN (hfimport's rule); 0 where allowed, the type's lowest value elsewhere.
func (b *builder) mask() string {
	g := b.g
	seq := g.Op("Gather", []string{g.Op("Shape", []string{InputIDs}), g.ScalarI64(1)}, ortgraph.AInt("axis", 0))
	total := g.Op("Add", []string{b.pastLen, seq})
	qi := g.Op("Range", []string{b.pastLen, total, g.ScalarI64(1)})
	kj := g.Op("Range", []string{g.ScalarI64(0), total, g.ScalarI64(1)})
	qi = g.Op("Unsqueeze", []string{qi, g.ConstI64(1)})
	kj = g.Op("Unsqueeze", []string{kj, g.ConstI64(0)})
	causal := g.Op("LessOrEqual", []string{kj, qi})
	diag := g.Op("Equal", []string{kj, qi})
	keyOK := g.Op("Cast", []string{AttentionMask}, ortgraph.AInt("to", int64(ortgraph.Bool)))
	keyOK = g.Op("Unsqueeze", []string{keyOK, g.ConstI64(1, 2)})
	allowed := g.Op("Or", []string{g.Op("And", []string{causal, keyOK}), diag})
	low := float32(-math.MaxFloat32)
	if b.dt == ortgraph.Float16 {
		low = -65504
	}
	return g.Op("Where", []string{allowed, g.ConstF(b.dt, 0), g.ConstF(b.dt, low)})
}

// norm applies RMSNorm i of the source (ONNX Runtime's SimplifiedLayerNormalization, float32
// inside, the kernel the eval graph runs).
func (b *builder) norm(i int, x string) string {
	n := b.s.Norms[i]
	return b.g.Add(ortgraph.NodeSpec{Op: "SimplifiedLayerNormalization", Inputs: []string{x, b.copyInit(n.Weight)}, Name: "/model/norm_" + strconv.Itoa(i),
		Attrs: []ortgraph.Attr{ortgraph.AInt("axis", -1), ortgraph.AFloat("epsilon", n.Eps), ortgraph.AInt("stash_type", 1)}})[0]
}

// copyInit declares a source initializer in the new graph (once) and returns its name.
func (b *builder) copyInit(name string) string {
	if !b.used[name] {
		b.used[name] = true
		b.g.AddInitializer(proto.Clone(b.s.G.Initializer(name)).(*onnxpb.TensorProto))
	}
	return name
}

// base applies Linear l's base weight as the eval graph holds it (MatMulNBits or MatMulBnb4
// bytes as they are; a full-precision weight through the same Transpose) or its merged
// replacement.
func (b *builder) base(l *passes.Linear, x string) (string, error) {
	g := b.g
	if t := b.merged[l.Module()]; t != nil {
		return g.Op("MatMul", []string{x, g.AddInitializer(t)}), nil
	}
	n := l.Node
	switch {
	case n.OpType == "MatMulNBits":
		ins := []string{x}
		for _, in := range n.Input[1:] {
			if in != "" {
				if b.s.G.Initializer(in) == nil {
					return "", fmt.Errorf("eval graph node %q: input %q is not an initializer", n.Name, in)
				}
				in = b.copyInit(in)
			}
			ins = append(ins, in)
		}
		return g.Add(ortgraph.NodeSpec{Op: "MatMulNBits", Domain: "com.microsoft", Inputs: ins, Attrs: n.Attribute, Name: "/" + l.Module() + "/MatMulNBits"})[0], nil
	case n.OpType == "MatMulBnb4":
		return b.bnb4Base(n, x, "/"+l.Module()+"/MatMulBnb4")
	case l.WeightIsOutIn:
		w := g.Op("Transpose", []string{b.copyInit(l.Weight)}, ortgraph.AInts("perm", 1, 0))
		return g.Op("MatMul", []string{x, w}), nil
	}
	return g.Op("MatMul", []string{x, b.copyInit(l.Weight)}), nil
}

// linear applies module mod (base and, unless merged, its LoRA update).
func (b *builder) linear(mod, x string) (string, error) {
	ys, err := b.linears(x, mod)
	if err != nil {
		return "", err
	}
	return ys[0], nil
}

// linears applies modules mods, all reading x: their bases, then their LoRA updates
// (fuse.go's lora: one shared A product when fusing).
func (b *builder) linears(x string, mods ...string) ([]string, error) {
	sinks := make([]sink, len(mods))
	for i, mod := range mods {
		l := b.s.Linears[mod]
		if l == nil {
			return nil, fmt.Errorf("eval graph: no Linear %s", mod)
		}
		y, err := b.base(l, x)
		if err != nil {
			return nil, err
		}
		sinks[i] = sink{y: y, mods: []string{mod}, cols: []int64{0}}
		if b.ad.Has(mod) {
			sinks[i].width = b.ad.Shape[mod][1][0]
		}
	}
	return b.lora(x, sinks), nil
}
