package autodiff

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ortq/ortq/internal/half"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/quantize"
)

// Bnb4NestedKey is the metadata key of a com.microsoft.MatMulBnb4 node whose absmax input is
// computed from a double-quantized form (quantize.NestedAbsmax): its value names the
// initializers "codes,scales,offset" (uint8 [blocks padded to 256], float32 [blocks/256, 1],
// float32 scalar), so that the gradient can dequantize them again. A node without it reads
// its absmax initializer directly.
const Bnb4NestedKey = "ortq.bnb4.nested_absmax"

// Bnb4Nested returns the initializer names of n's double-quantized absmax, or ok = false.
func Bnb4Nested(n *onnxpb.NodeProto) (codes, scales, offset string, ok bool) {
	for _, kv := range n.MetadataProps {
		if kv.Key == Bnb4NestedKey {
			p := strings.Split(kv.Value, ",")
			if len(p) == 3 {
				return p[0], p[1], p[2], true
			}
		}
	}
	return "", "", "", false
}

// Bnb4Gate returns a boolean [1] that depends on v (isnan of its first element, always
// false): the dequantization chains read their constant inputs through Where(gate, c, c),
// so that ONNX Runtime neither constant-folds them at load (which would store every weight
// in full precision) nor runs them before v exists (which would keep the dequantized weight
// alive from the start of the step).
func Bnb4Gate(g *ortgraph.Graph, v string) string {
	first := g.Op("Slice", []string{g.Op("Reshape", []string{v, g.ConstI64(-1)}), g.ConstI64(0), g.ConstI64(1)})
	return g.Op("IsNaN", []string{first})
}

func gated(g *ortgraph.Graph, gate, c string) string {
	return g.Op("Where", []string{gate, c, c})
}

// Bnb4Absmax emits the dequantization of a double-quantized absmax: Gather(DynamicMap,
// codes) · scales per 256 blocks + offset, in float32 (bitsandbytes' dequantize_blockwise
// then += offset), cast to dt. blocks is the number of real codes; gate as in Bnb4Gate.
func Bnb4Absmax(g *ortgraph.Graph, codes, scales, offset string, blocks int64, gate string, dt int32) string {
	m := "bnb4.dynamic_map"
	if g.Initializer(m) == nil {
		g.AddInitializer(ortgraph.FloatTensor(m, ortgraph.Float, []int64{256}, quantize.DynamicMap()))
	}
	c := g.Op("Gather", []string{m, g.Op("Cast", []string{gated(g, gate, codes)}, ortgraph.AInt("to", int64(onnxpb.TensorProto_INT32)))})
	c = g.Op("Reshape", []string{c, g.ConstI64(-1, quantize.NestedBlockSize)})
	c = g.Op("Reshape", []string{g.Op("Mul", []string{c, scales}), g.ConstI64(-1)})
	c = g.Op("Slice", []string{c, g.ConstI64(0), g.ConstI64(blocks), g.ConstI64(0)})
	c = g.Op("Add", []string{c, offset})
	if dt != ortgraph.Float {
		c = g.Op("Cast", []string{c}, ortgraph.AInt("to", int64(dt)))
	}
	g.SetType(c, ortgraph.TensorType(dt, []int64{blocks}))
	return c
}

// bnb4LUT returns the shared [256, 2] table of type t in dt that maps a byte to its two
// values, high nibble first: one Gather dequantizes both codes of a byte.
func bnb4LUT(g *ortgraph.Graph, t quantize.Type, dt int32) (string, error) {
	table := t.Table()
	if table == nil {
		return "", fmt.Errorf("MatMulBnb4: no code table for %q", t)
	}
	name := fmt.Sprintf("bnb4.%s_lut.%s", t, strings.ToLower(ortgraph.DTypeName(dt)))
	if g.Initializer(name) == nil {
		v := make([]float32, 512)
		for b := range 256 {
			v[2*b], v[2*b+1] = table[b>>4], table[b&15]
			if dt == ortgraph.Float16 {
				v[2*b], v[2*b+1] = half.RoundFloat16(v[2*b]), half.RoundFloat16(v[2*b+1])
			}
		}
		g.AddInitializer(ortgraph.FloatTensor(name, dt, []int64{256, 2}, v))
	}
	return name, nil
}

// Bnb4Type is the data type of a MatMulBnb4 node (quant_type 0 FP4, 1 NF4).
func Bnb4Type(n *onnxpb.NodeProto) (quantize.Type, error) {
	switch q := ortgraph.AttrInt(n, "quant_type", -1); q {
	case 0:
		return quantize.FP4, nil
	case 1:
		return quantize.NF4, nil
	default:
		return "", fmt.Errorf("MatMulBnb4 %q: quant_type %d: want 0 (FP4) or 1 (NF4)", n.Name, q)
	}
}

// Bnb4Weight returns W [N, K] of a MatMulBnb4 node, dequantized in the graph from the node's
// own bytes: Gather of the byte-pair table by the (gated) bytes, times the absmax of each
// block — the absmax initializer, or the double-quantized form dequantized again (gated as
// well). The same uint8 initializer feeds MatMulBnb4 and this chain, so ONNX Runtime holds
// the 4-bit bytes once. Values: table[code]·absmax in dt, as MatMulBnb4's kernels compute.
func Bnb4Weight(g *ortgraph.Graph, n *onnxpb.NodeProto, gate string, dt int32) (string, error) {
	t, err := Bnb4Type(n)
	if err != nil {
		return "", err
	}
	K, N, bs := ortgraph.AttrInt(n, "K", 0), ortgraph.AttrInt(n, "N", 0), ortgraph.AttrInt(n, "block_size", 0)
	if K <= 0 || N <= 0 || bs <= 0 || (N*K)%bs != 0 || bs%2 != 0 {
		return "", fmt.Errorf("MatMulBnb4 %q: K %d, N %d, block_size %d: ortq needs N·K a multiple of an even block size", n.Name, K, N, bs)
	}
	if g.Initializer(n.Input[1]) == nil {
		return "", fmt.Errorf("MatMulBnb4 %q: weight %q is not an initializer", n.Name, n.Input[1])
	}
	lut, err := bnb4LUT(g, t, dt)
	if err != nil {
		return "", err
	}
	blocks := N * K / bs
	absmax := n.Input[2]
	if codes, scales, offset, ok := Bnb4Nested(n); ok {
		absmax = Bnb4Absmax(g, codes, scales, offset, blocks, gate, dt)
	} else if g.Initializer(absmax) == nil {
		return "", fmt.Errorf("MatMulBnb4 %q: absmax %q is neither an initializer nor double-quantized", n.Name, absmax)
	}
	idx := g.Op("Cast", []string{gated(g, gate, n.Input[1])}, ortgraph.AInt("to", int64(onnxpb.TensorProto_INT32)))
	v := g.Op("Reshape", []string{g.Op("Gather", []string{lut, idx}), g.ConstI64(blocks, bs)})
	w := g.Op("Mul", []string{v, g.Op("Reshape", []string{absmax, g.ConstI64(blocks, 1)})})
	w = g.Op("Reshape", []string{w, g.ConstI64(N, K)})
	g.SetType(w, ortgraph.TensorType(dt, []int64{N, K}))
	return w, nil
}

// Bnb4Chain is a Bnb4Weight chain read backwards from its output, last node first: the
// Reshape to [N, K], the Mul by the absmax, the Reshape to [blocks, block size], the Gather
// of the [256, 2] byte table, the Cast of the bytes and the gate, Where(gate, bytes, bytes).
type Bnb4Chain struct{ Out, Mul, Blocks, Gather, Cast, Gate *onnxpb.NodeProto }

// MatchBnb4Chain returns the Bnb4Weight chain whose output is w, or nil when w is no such
// output (a double-quantized absmax's chain, Bnb4Absmax, gathers a [256] table).
func MatchBnb4Chain(g *ortgraph.Graph, w string) *Bnb4Chain {
	n := g.Producer(w)
	var nodes []*onnxpb.NodeProto
	for _, step := range []struct {
		op  string
		arg int // the input the chain continues through
	}{{"Reshape", 0}, {"Mul", 0}, {"Reshape", 0}, {"Gather", 1}, {"Cast", 0}} {
		if n == nil || n.OpType != step.op || n.Domain != "" {
			return nil
		}
		if lut := g.Initializer(n.Input[0]); step.op == "Gather" && (lut == nil || !slices.Equal(lut.Dims, []int64{256, 2})) {
			return nil
		}
		nodes = append(nodes, n)
		n = g.Producer(n.Input[step.arg])
	}
	if n == nil || n.OpType != "Where" || len(n.Input) != 3 || n.Input[1] != n.Input[2] || g.Initializer(n.Input[1]) == nil {
		return nil
	}
	return &Bnb4Chain{Out: nodes[0], Mul: nodes[1], Blocks: nodes[2], Gather: nodes[3], Cast: nodes[4], Gate: n}
}

// Bnb4WeightBytes is Bnb4Weight read backwards: the 4-bit bytes initializer that w, the
// output of a Bnb4Weight chain (MatchBnb4Chain), dequantizes; "" when w is no such output.
func Bnb4WeightBytes(g *ortgraph.Graph, w string) string {
	if c := MatchBnb4Chain(g, w); c != nil {
		return c.Gate.Input[1]
	}
	return ""
}

// MatMulBnb4: Y = A·Wᵀ with W [N, K] in bitsandbytes' 4-bit layout ⇒ dA = dY·W, W dequantized
// again from the same bytes (Bnb4Weight) with its constants gated on dY, so the chain runs
// only when the backward pass reaches the Linear and its fp weight lives only until the
// product. The 4-bit weight and its absmax are frozen.
func gradMatMulBnb4(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	for i := 1; i < len(need); i++ {
		if need[i] {
			return nil, fmt.Errorf("MatMulBnb4 input %d (%q) is frozen 4-bit data and has no gradient", i, n.Input[i])
		}
	}
	dt := b.ElemType(n.Input[0])
	if dt == 0 {
		dt = ortgraph.Float
	}
	w, err := Bnb4Weight(b.Graph, n, Bnb4Gate(b.Graph, dy[0]), dt)
	if err != nil {
		return nil, err
	}
	g[0] = b.Op("MatMul", []string{dy[0], w})
	return g, nil
}

// RewriteAsBnb4 turns node (whose first input is x) into MatMulBnb4(x, B, absmax) over p,
// adding p's initializers under names from base. With double quantization the absmax input
// is Bnb4Absmax over the 8-bit form, gated on x, and the node records the form's initializer
// names under Bnb4NestedKey. It returns the names of the weight and of the absmax (or the
// 8-bit codes) initializers. The node keeps its name and output.
func RewriteAsBnb4(g *ortgraph.Graph, node *onnxpb.NodeProto, x string, p *quantize.Bnb4, base string, dt int32) (weight, absmax string) {
	// Initializers are named after base alone; g.Scope names the nodes.
	scope := g.Scope
	g.Scope = ""
	defer func() { g.Scope = scope }()
	weight = g.AddInitializer(ortgraph.BytesTensor(g.Fresh(base+".weight"), ortgraph.Uint8, []int64{int64(len(p.Data))}, p.Data))
	if p.Nested == nil {
		absmax = g.AddInitializer(ortgraph.FloatTensor(g.Fresh(base+".absmax"), dt, []int64{int64(len(p.Absmax))}, p.Absmax))
		node.Input = []string{x, weight, absmax}
	} else {
		nq := p.Nested
		absmax = g.AddInitializer(ortgraph.BytesTensor(g.Fresh(base+".absmax_codes"), ortgraph.Uint8, []int64{int64(len(nq.Codes))}, nq.Codes))
		scales := g.AddInitializer(ortgraph.FloatTensor(g.Fresh(base+".absmax_scales"), ortgraph.Float, []int64{int64(len(nq.Scales)), 1}, nq.Scales))
		offset := g.AddInitializer(ortgraph.FloatTensor(g.Fresh(base+".absmax_offset"), ortgraph.Float, nil, []float32{nq.Offset}))
		g.Scope = scope
		a := Bnb4Absmax(g, absmax, scales, offset, int64(nq.Blocks), Bnb4Gate(g, x), dt)
		node.Input = []string{x, weight, a}
		node.MetadataProps = append(node.MetadataProps, &onnxpb.StringStringEntryProto{Key: Bnb4NestedKey, Value: absmax + "," + scales + "," + offset})
	}
	qt := int64(1)
	if p.Type == quantize.FP4 {
		qt = 0
	}
	node.OpType, node.Domain = "MatMulBnb4", "com.microsoft"
	node.Attribute = []*onnxpb.AttributeProto{
		ortgraph.AInt("K", int64(p.K)), ortgraph.AInt("N", int64(p.N)),
		ortgraph.AInt("block_size", int64(p.BlockSize)), ortgraph.AInt("quant_type", qt),
	}
	return weight, absmax
}
