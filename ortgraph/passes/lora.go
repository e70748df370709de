package passes

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// PEFTName is PEFT's state-dict name for a LoRA tensor of a module.
func PEFTName(module, ab string) string {
	return "base_model.model." + module + ".lora_" + ab + ".weight"
}

// LoRA adds y += (α/r)·B·A·dropout(x) beside every target Linear, as PEFT does. A [r, in]
// and B [out, r] are fp32 graph inputs (master weights live outside the graph) cast to
// the activation type inside it; dropout masks are a hash of the graph's seed input,
// the module and the position (dropout.go), so forward, recomputation and a resumed run
// all see the same masks. With dropout the graph computes ((α/r)/(1−p))·B·A·(mask⊙x):
// dropout's 1/(1−p) rides on the scale, which multiplies B (a [r, out] factor) instead of
// x or the [tokens, out] product. Targets that read one input (q_proj and v_proj) share one
// product x·[A₁ᵀ | A₂ᵀ] when their masks agree — without dropout, or with
// LoRAOptions.ShareDropoutMasks (one mask per input, where PEFT draws one per target).
var LoRA = &ortgraph.Pass{
	Name:        "lora",
	Doc:         "insert LoRA adapters (PEFT names, shapes, scaling α/r, dropout) on the target Linears",
	Requires:    []*ortgraph.Pass{FindLinears, Quantize},
	OptionsType: reflect.TypeFor[LoRAOptions](),
	ResultType:  reflect.TypeFor[[]manifest.LoRAParam](),
	Run:         runLoRA,
}

func runLoRA(ctx *ortgraph.Context) (any, error) {
	c := ortgraph.OptionsOf[LoRAOptions](ctx) // rank, dropout and targets checked by Validate
	g := ctx.G
	ls := ortgraph.ResultOf[*Linears](ctx, FindLinears)
	want := map[string]bool{}
	for _, t := range c.Targets {
		want[strings.TrimSpace(t)] = true
	}
	var params []manifest.LoRAParam
	r := int64(c.Rank)
	// PEFT computes scale·B·A·(mask⊙x/(1−p)); the 1/(1−p) of dropout is folded into the
	// constant scale applied to B, so the mask is applied as Where(keep, x, 0) and no
	// full-size multiply by 1/(1−p) runs. The product is the same linear map of x, so the
	// gradients of A, B and x (Where passes dy where kept, the scale multiplies dy) are
	// PEFT's: dA = s'·(Bᵀdy)(mask⊙x)ᵀ, dx = mask⊙(s'·AᵀBᵀdy) with s' = (α/r)/(1−p).
	scale := c.Alpha / float64(c.Rank)
	var widths []int64 // input width of each LoRA module, by module number
	if c.Dropout > 0 {
		scale /= 1 - c.Dropout
		for _, l := range ls.All {
			if want[l.Kind] {
				widths = append(widths, l.In)
			}
		}
	}
	ad := adapter{g: g, rank: r, scale: scale, dropout: c.Dropout, hash: newDropoutHash(g, widths)}
	for _, group := range ad.groups(ls.All, want, c.ShareDropoutMasks) {
		ps, err := ad.add(group, len(params)/2)
		if err != nil {
			return nil, err
		}
		params = append(params, ps...)
	}
	if len(params) == 0 {
		return nil, fmt.Errorf("targets %v matched no Linear in the graph", c.Targets)
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	ctx.Logf("lora: %d tensors on %d Linears (r=%d, alpha=%g, dropout=%g)", len(params), len(params)/2, c.Rank, c.Alpha, c.Dropout)
	return params, nil
}

// adapter adds LoRA adapters of one rank, scale and dropout to a graph.
type adapter struct {
	g       *ortgraph.Graph
	rank    int64
	scale   float64 // (α/r)/(1−p)
	dropout float64
	hash    *dropoutHash
}

// groups lists the target Linears in graph order, one group per adapter product: the
// targets that read one input share a group (q_proj and v_proj read the same normed
// hidden state) when nothing tells their A products apart — no dropout, or one dropout
// mask per input (shared) — so that one GEMM x·[A₁ᵀ | A₂ᵀ] computes them; else one
// group per target.
func (ad adapter) groups(all []*Linear, want map[string]bool, shared bool) [][]*Linear {
	var out [][]*Linear
	at := map[string]int{} // input → index of its group in out
	for _, l := range all {
		if !want[l.Kind] {
			continue
		}
		x := l.Node.Input[0]
		if i, ok := at[x]; ok && (ad.dropout == 0 || shared) {
			out[i] = append(out[i], l)
			continue
		}
		at[x] = len(out)
		out = append(out, []*Linear{l})
	}
	return out
}

// add puts the adapters of a group of Linears that read one input x beside them, the
// first being LoRA module number module: their A and B inputs (returned as manifest
// parameters) and each y += x·Aᵀ·(Bᵀ·scale), x through the dropout mask of the group's
// first module. Several Linears share one product x·[A₁ᵀ | A₂ᵀ | …], split by columns.
func (ad adapter) add(group []*Linear, module int) ([]manifest.LoRAParam, error) {
	g, r := ad.g, ad.rank
	first := group[0]
	x := first.Node.Input[0]
	dt := g.ElemType(x)
	if dt == 0 {
		return nil, fmt.Errorf("node %q: the input type of %s is unknown", first.Node.Name, first.Module())
	}
	var params []manifest.LoRAParam
	ats, bts := make([]string, len(group)), make([]string, len(group))
	for i, l := range group {
		ps, err := ad.factors(l, dt, &ats[i], &bts[i])
		if err != nil {
			return nil, err
		}
		params = append(params, ps...)
	}
	saved := g.Scope
	defer func() { g.Scope = saved }()
	g.Scope = "lora/" + first.Module()
	xin, err := ad.input(x, module, dt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", first.Module(), err)
	}
	hs := []string{}
	if len(group) == 1 {
		hs = append(hs, g.Op("MatMul", []string{xin, ats[0]}))
	} else {
		at := g.Op("Concat", ats, ortgraph.AInt("axis", 1))
		g.SetType(at, ortgraph.TensorType(dt, []int64{first.In, r * int64(len(group))}))
		h := g.Op("MatMul", []string{xin, at})
		setLike(g, h, x, r*int64(len(group)))
		sizes := make([]int64, len(group))
		for i := range sizes {
			sizes[i] = r
		}
		hs = g.Add(ortgraph.NodeSpec{Op: "Split", Inputs: []string{h, g.ConstI64(sizes...)}, NOut: len(group), Attrs: []ortgraph.Attr{ortgraph.AInt("axis", -1)}})
	}
	for i, l := range group {
		g.Scope = "lora/" + l.Module()
		setLike(g, hs[i], x, r)
		y := l.Node.Output[0]
		ds := g.Op("MatMul", []string{hs[i], bts[i]})
		setLike(g, ds, x, l.Out)
		sum := g.Op("Add", []string{y, ds})
		setLike(g, sum, x, l.Out)
		// Readers of the base output now read base + LoRA (the Add itself excepted).
		g.ReplaceUses(y, sum, g.Producer(sum))
	}
	return params, nil
}

// factors declares Linear l's A [r, in] and B [out, r] graph inputs and sets *at and *bts
// to Aᵀ [in, r] and the scaled Bᵀ [r, out] in the activation type dt.
func (ad adapter) factors(l *Linear, dt int32, at, bts *string) ([]manifest.LoRAParam, error) {
	g, r := ad.g, ad.rank
	var params []manifest.LoRAParam
	aName, bName := PEFTName(l.Module(), "A"), PEFTName(l.Module(), "B")
	for _, p := range []struct {
		name  string
		shape []int64
		kind  string
	}{{aName, []int64{r, l.In}, "A"}, {bName, []int64{l.Out, r}, "B"}} {
		if err := g.Reserve(p.name); err != nil {
			return nil, fmt.Errorf("%s: %w", l.Module(), err)
		}
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: p.name, Type: ortgraph.TensorType(ortgraph.Float, p.shape)})
		params = append(params, manifest.LoRAParam{Name: p.name, Module: l.Module(), Kind: p.kind, Shape: p.shape})
	}
	g.Reindex()
	saved := g.Scope
	defer func() { g.Scope = saved }()
	g.Scope = "lora/" + l.Module()
	a, b := aName, bName
	if dt != ortgraph.Float {
		a = g.Op("Cast", []string{a}, ortgraph.AInt("to", int64(dt)))
		b = g.Op("Cast", []string{b}, ortgraph.AInt("to", int64(dt)))
		g.SetType(a, ortgraph.TensorType(dt, []int64{r, l.In}))
		g.SetType(b, ortgraph.TensorType(dt, []int64{l.Out, r}))
	}
	*at = g.Op("Transpose", []string{a}, ortgraph.AInts("perm", 1, 0))
	bt := g.Op("Transpose", []string{b}, ortgraph.AInts("perm", 1, 0))
	g.SetType(*at, ortgraph.TensorType(dt, []int64{l.In, r}))
	g.SetType(bt, ortgraph.TensorType(dt, []int64{r, l.Out}))
	// The α/r (and 1/(1−p)) scale multiplies the [r, out] factor, not the [tokens, out]
	// product: (h·Bᵀ)·s = h·(Bᵀ·s), one tiny Mul instead of a full-size one in the
	// forward pass and another in the backward pass.
	*bts = g.Op("Mul", []string{bt, g.ConstF(dt, float32(ad.scale))})
	g.SetType(*bts, ortgraph.TensorType(dt, []int64{r, l.Out}))
	return params, nil
}

// input returns x through LoRA module number module's dropout mask, or x without dropout.
func (ad adapter) input(x string, module int, dt int32) (string, error) {
	if ad.dropout == 0 {
		return x, nil
	}
	// Dropout written out as keep ? x : 0 with a hashed mask (dropout.go; the 1/(1−p) is
	// in scale): ONNX Runtime 1.29's CUDA provider does not take the Dropout op (measured:
	// it ran on the CPU with casts to float32 around it), and its random ops keep their
	// state in the session, which a resumed run cannot restore.
	keep, err := ad.hash.keep(x, module, ad.dropout)
	if err != nil {
		return "", err
	}
	xin := ad.g.Op("Where", []string{keep, x, ad.g.ConstF(dt, 0)})
	ad.g.SetType(xin, ad.g.Type(x))
	return xin, nil
}

// setLike records v's type as x's with the last dim replaced.
func setLike(g *ortgraph.Graph, v, x string, last int64) {
	d := g.SymDims(x)
	if d == nil {
		return
	}
	d = append([]string(nil), d...)
	d[len(d)-1] = fmt.Sprint(last)
	g.SetType(v, ortgraph.SymTensorType(g.ElemType(x), d))
}
