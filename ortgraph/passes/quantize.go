package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/quantize"
)

// Quantize replaces each decoder Linear's weight with 4-bit blocks read by
// com.microsoft.MatMulNBits (Y = A·Bᵀ over the [out, in] weight). The fp weight is removed
// so only one 4-bit copy exists; the backward pass dequantizes the same bytes (see
// autodiff's MatMulNBits rule). lm_head (often tied to the embedding) stays 16-bit unless
// QuantizeOptions.LMHead is set. Its result lists the 4-bit layers ([]manifest.QuantLayer,
// nil for a 16-bit base).
var Quantize = &ortgraph.Pass{
	Name:        "quantize",
	Doc:         "Linear weights → 4-bit com.microsoft.MatMulNBits (block-wise, symmetric or asymmetric)",
	Requires:    []*ortgraph.Pass{FindLinears},
	OptionsType: reflect.TypeFor[QuantizeOptions](),
	ResultType:  reflect.TypeFor[[]manifest.QuantLayer](),
	Run:         runQuantize,
}

func runQuantize(ctx *ortgraph.Context) (any, error) {
	c := ortgraph.OptionsOf[QuantizeOptions](ctx)
	g := ctx.G
	ls := ortgraph.ResultOf[*Linears](ctx, FindLinears)
	var out []manifest.QuantLayer
	pre := 0
	for _, l := range ls.All {
		if !l.Prequantized {
			continue
		}
		n := l.Node
		if c.Bits == 16 {
			return nil, fmt.Errorf("node %q (%s) is already 4-bit MatMulNBits: --bits 16 needs a 16-bit source model", n.Name, l.Module())
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
		pre++
	}
	if c.Bits == 16 {
		return []manifest.QuantLayer(nil), nil
	}
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
		p, err := quantize.Quantize(w, int(l.Out), int(l.In), c.Quant)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", l.Module(), err)
		}
		st := p.ErrorStats(w)
		x := l.Node.Input[0]
		dt := g.ElemType(x)
		if dt == 0 {
			dt = t.DataType
		}
		base := "q4." + l.Module()
		bName := g.AddInitializer(ortgraph.BytesTensor(g.Fresh(base+".weight"), ortgraph.Uint8, []int64{int64(p.N), int64(p.Blocks), int64(p.BlockSize / 2)}, p.Data))
		sName := g.AddInitializer(ortgraph.FloatTensor(g.Fresh(base+".scales"), dt, []int64{int64(p.N), int64(p.Blocks)}, p.Scales))
		ins := []string{x, bName, sName}
		if p.ZeroPoints != nil {
			ins = append(ins, g.AddInitializer(ortgraph.BytesTensor(g.Fresh(base+".zero_points"), ortgraph.Uint8, []int64{int64(p.N), int64((p.Blocks + 1) / 2)}, p.ZeroPoints)))
		}
		// Rewrite the MatMul in place so its output name (and every reader) stays.
		n := l.Node
		n.OpType, n.Domain = "MatMulNBits", "com.microsoft"
		n.Input = ins
		n.Attribute = []*onnxpb.AttributeProto{
			ortgraph.AInt("K", l.In), ortgraph.AInt("N", l.Out), ortgraph.AInt("bits", 4),
			ortgraph.AInt("block_size", int64(p.BlockSize)), ortgraph.AInt("accuracy_level", 0),
		}
		// Drop the 16-bit weight when nothing else reads it (tied weights keep it).
		readers := 0
		for _, r := range cons[l.Weight] {
			if r != n {
				readers++
			}
		}
		if readers == 0 {
			g.RemoveInitializer(l.Weight)
		}
		out = append(out, manifest.QuantLayer{Module: l.Module(), Shape: [2]int{p.N, p.K}, RMS: st.RMS, RelRMS: st.RelRMS, MaxAbs: st.MaxAbs, Weights: bName, Scales: sName})
	}
	g.M.SetOpset("com.microsoft", 1)
	g.Prune()
	if pre > 0 {
		ctx.Logf("quantize: %d Linears already 4-bit in the source graph", pre)
	}
	ctx.Logf("quantize: %d Linears to 4-bit, block %d", len(out)-pre, c.Quant.BlockSize)
	return out, nil
}
