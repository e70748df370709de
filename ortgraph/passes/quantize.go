package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/quantize"
)

// Quantize replaces each decoder Linear's weight with 4-bit blocks read by
// com.microsoft.MatMulNBits (Y = A·Bᵀ over the [out, in] weight; QuantizeOptions.Quant.Type
// int4) or com.microsoft.MatMulBnb4 (nf4, fp4: bitsandbytes' tables and layout, the absmax as
// an initializer or, double-quantized, dequantized by a small chain in front of the node;
// see autodiff.RewriteAsBnb4). The fp weight is removed so only one 4-bit copy exists; the
// backward pass dequantizes the same bytes (see autodiff's MatMulNBits and MatMulBnb4
// rules). lm_head (often tied to the embedding) stays 16-bit unless QuantizeOptions.LMHead
// is set. Its result lists the 4-bit layers ([]manifest.QuantLayer, nil for a 16-bit base).
var Quantize = &ortgraph.Pass{
	Name: "quantize",
	Doc: "Linear weights → 4-bit com.microsoft.MatMulNBits (int4, symmetric or asymmetric) or MatMulBnb4 " +
		"(nf4, fp4, double-quantized absmax)",
	Requires:    []*ortgraph.Pass{FindLinears},
	OptionsType: reflect.TypeFor[QuantizeOptions](),
	ResultType:  reflect.TypeFor[[]manifest.QuantLayer](),
	Run:         runQuantize,
}

func runQuantize(ctx *ortgraph.Context) (any, error) {
	c := ortgraph.OptionsOf[QuantizeOptions](ctx)
	g := ctx.G
	ls := ortgraph.ResultOf[*Linears](ctx, FindLinears)
	out, err := prequantizedLayers(ls, c)
	if err != nil {
		return nil, err
	}
	pre := len(out)
	if c.Bits == 16 {
		return []manifest.QuantLayer(nil), nil
	}
	if out, err = quantizeLinears(g, ls, c, out); err != nil {
		return nil, err
	}
	g.M.SetOpset("com.microsoft", 1)
	if c.Quant.Type.IsBnb4() {
		// The double-quantized absmax chains were appended after the nodes reading them.
		if err := g.TopoSort(); err != nil {
			return nil, err
		}
	}
	g.Prune()
	if pre > 0 {
		ctx.Logf("quantize: %d Linears already 4-bit in the source graph", pre)
	}
	if t := c.Quant.Type; t.IsBnb4() {
		ctx.Logf("quantize: %d Linears to 4-bit %s (MatMulBnb4), block %d%s", len(out)-pre, t, c.Quant.BlockSize,
			map[bool]string{true: ", double-quantized absmax"}[c.Quant.DoubleQuant])
	} else {
		ctx.Logf("quantize: %d Linears to 4-bit, block %d", len(out)-pre, c.Quant.BlockSize)
	}
	return out, nil
}

// prequantizedLayers checks the Linears the source graph holds 4-bit already against the
// options (the manifest records them as the base's quantization) and lists them.
func prequantizedLayers(ls *Linears, c QuantizeOptions) ([]manifest.QuantLayer, error) {
	var out []manifest.QuantLayer
	for _, l := range ls.All {
		if !l.Prequantized {
			continue
		}
		n := l.Node
		if c.Bits == 16 {
			return nil, fmt.Errorf("node %q (%s) is already 4-bit %s: --bits 16 needs a 16-bit source model", n.Name, l.Module(), n.OpType)
		}
		if n.OpType == "MatMulBnb4" {
			if err := checkPrequantizedBnb4(n, l, c.Quant); err != nil {
				return nil, err
			}
			absmax := n.Input[2]
			if codes, _, _, ok := autodiff.Bnb4Nested(n); ok {
				absmax = codes // as quantizeBnb4 records it: the initializer, not the chain
			}
			out = append(out, manifest.QuantLayer{Module: l.Module(), Shape: [2]int{int(l.Out), int(l.In)}, Prequantized: true, Weights: n.Input[1], Scales: absmax})
			continue
		}
		if t := c.Quant.Type; t.IsBnb4() {
			return nil, fmt.Errorf("node %q (%s) is already int4 MatMulNBits: drop --quant %s (or import the model again with it)", n.Name, l.Module(), t)
		}
		if b := ortgraph.AttrInt(n, "bits", 4); b != 4 {
			return nil, fmt.Errorf("node %q (%s): MatMulNBits with bits=%d; ortq trains 4-bit bases only", n.Name, l.Module(), b)
		}
		// The options must say what the graph holds: the manifest records them as the
		// quantization of the base.
		if bs := ortgraph.AttrInt(n, "block_size", 0); bs != int64(c.Quant.BlockSize) {
			return nil, fmt.Errorf("node %q (%s) is already 4-bit with block_size %d: pass --block-size %d", n.Name, l.Module(), bs, bs)
		}
		if asym := len(n.Input) > 3 && n.Input[3] != ""; asym != c.Quant.Asymmetric {
			if asym {
				return nil, fmt.Errorf("node %q (%s) is already 4-bit with zero points: pass --asymmetric", n.Name, l.Module())
			}
			return nil, fmt.Errorf("node %q (%s) is already 4-bit without zero points: drop --asymmetric", n.Name, l.Module())
		}
		out = append(out, manifest.QuantLayer{Module: l.Module(), Shape: [2]int{int(l.Out), int(l.In)}, Prequantized: true, Weights: n.Input[1], Scales: n.Input[2]})
	}
	return out, nil
}

// quantizeLinears quantizes every other Linear (lm_head only with LMHead) in place:
// MatMulNBits for int4, MatMulBnb4 for nf4/fp4; it appends their layers to out.
func quantizeLinears(g *ortgraph.Graph, ls *Linears, c QuantizeOptions, out []manifest.QuantLayer) ([]manifest.QuantLayer, error) {
	cons := g.Consumers()
	for _, l := range ls.All {
		if l.Prequantized || (l.Kind == "lm_head" && !c.LMHead) {
			continue
		}
		t := g.Initializer(l.Weight)
		w, err := g.M.Floats(t)
		if err != nil {
			return nil, fmt.Errorf("%s weight %q: %w", l.Module(), l.Weight, err)
		}
		// Bring the weight to [out, in] (MatMulNBits' N×K) unless it is stored that way.
		if !l.WeightIsOutIn {
			w = quantize.Transpose(w, int(l.In), int(l.Out))
		}
		x := l.Node.Input[0]
		dt := g.ElemType(x)
		if dt == 0 {
			dt = t.DataType
		}
		if c.Quant.Type.IsBnb4() {
			q, err := quantizeBnb4(g, l, w, dt, c.Quant)
			if err != nil {
				return nil, err
			}
			dropUnread(g, cons, l)
			out = append(out, q)
			continue
		}
		p, err := quantize.Quantize(w, int(l.Out), int(l.In), c.Quant)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", l.Module(), err)
		}
		st := p.ErrorStats(w)
		base := "q4." + l.Module()
		bName := g.AddInitializer(ortgraph.BytesTensor(g.Fresh(base+".weight"), ortgraph.Uint8, []int64{int64(p.N), int64(p.Blocks), int64(p.BlockSize / 2)}, p.Data))
		sName := g.AddInitializer(ortgraph.FloatTensor(g.Fresh(base+".scales"), dt, []int64{int64(p.N), int64(p.Blocks)}, p.Scales))
		ins := []string{x, bName, sName}
		if p.ZeroPoints != nil {
			ins = append(ins, g.AddInitializer(ortgraph.BytesTensor(g.Fresh(base+".zero_points"), ortgraph.Uint8, []int64{int64(p.N),
				int64((p.Blocks + 1) / 2)}, p.ZeroPoints)))
		}
		// Rewrite the MatMul in place so its output name (and every reader) stays.
		n := l.Node
		n.OpType, n.Domain = "MatMulNBits", "com.microsoft"
		n.Input = ins
		n.Attribute = []*onnxpb.AttributeProto{
			ortgraph.AInt("K", l.In), ortgraph.AInt("N", l.Out), ortgraph.AInt("bits", 4),
			ortgraph.AInt("block_size", int64(p.BlockSize)), ortgraph.AInt("accuracy_level", 0),
		}
		dropUnread(g, cons, l)
		out = append(out, manifest.QuantLayer{Module: l.Module(), Shape: [2]int{p.N, p.K}, RMS: st.RMS, RelRMS: st.RelRMS, MaxAbs: st.MaxAbs,
			Weights: bName, Scales: sName})
	}
	return out, nil
}

// dropUnread removes l's 16-bit weight when nothing but l's node read it (tied weights keep
// it); cons are the consumers from before the rewrite.
func dropUnread(g *ortgraph.Graph, cons map[string][]*onnxpb.NodeProto, l *Linear) {
	for _, r := range cons[l.Weight] {
		if r != l.Node {
			return
		}
	}
	g.RemoveInitializer(l.Weight)
}

// quantizeBnb4 rewrites l's MatMul in place as com.microsoft.MatMulBnb4 over w [out, in]
// quantized with o (NF4 or FP4, bitsandbytes' layout; see autodiff.RewriteAsBnb4) and
// returns its manifest record.
func quantizeBnb4(g *ortgraph.Graph, l *Linear, w []float32, dt int32, o quantize.Options) (manifest.QuantLayer, error) {
	p, err := quantize.QuantizeBnb4(w, int(l.Out), int(l.In), o)
	if err != nil {
		return manifest.QuantLayer{}, fmt.Errorf("%s: %w", l.Module(), err)
	}
	st := p.ErrorStats(w)
	// The double-quantized absmax chain belongs to the Linear's module (as dq-forward's
	// chains do), so Recompute puts it in the Linear's layer.
	saved, first := g.Scope, len(g.P.Node)
	g.Scope = l.Node.Name + "/bnb4"
	weight, absmax := autodiff.RewriteAsBnb4(g, l.Node, l.Node.Input[0], p, "q4."+l.Module(), dt)
	g.Scope = saved
	for _, d := range g.P.Node[first:] {
		copyScope(d, l.Node)
	}
	return manifest.QuantLayer{Module: l.Module(), Shape: [2]int{p.N, p.K}, RMS: st.RMS, RelRMS: st.RelRMS, MaxAbs: st.MaxAbs, Weights: weight,
		Scales: absmax}, nil
}

// checkPrequantizedBnb4 requires the options to say what a source MatMulBnb4 holds: the
// manifest records them as the quantization of the base.
func checkPrequantizedBnb4(n *onnxpb.NodeProto, l *Linear, o quantize.Options) error {
	t, err := autodiff.Bnb4Type(n)
	if err != nil {
		return err
	}
	if t != o.Type {
		return fmt.Errorf("node %q (%s) is already 4-bit %s: pass --quant %s", n.Name, l.Module(), t, t)
	}
	if bs := ortgraph.AttrInt(n, "block_size", 0); bs != int64(o.BlockSize) {
		return fmt.Errorf("node %q (%s) is already 4-bit with block_size %d: pass --block-size %d", n.Name, l.Module(), bs, bs)
	}
	if _, _, _, dq := autodiff.Bnb4Nested(n); dq != o.DoubleQuant {
		if dq {
			return fmt.Errorf("node %q (%s) is already 4-bit with double-quantized absmax: pass --double-quant", n.Name, l.Module())
		}
		return fmt.Errorf("node %q (%s) is already 4-bit with float absmax: drop --double-quant", n.Name, l.Module())
	}
	return nil
}
