package autodiff

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

func (b *Builder) softmaxAxis(n *onnxpb.NodeProto) (int64, error) {
	def := int64(-1)
	if b.opset < 13 {
		def = 1
		if b.Rank(n.Input[0]) != 2 {
			return 0, fmt.Errorf("%s before opset 13 flattens its input; only 2-D inputs are supported", n.OpType)
		}
	}
	return ortgraph.AttrInt(n, "axis", def), nil
}

// Softmax: y = softmax(x) ⇒ dx = y ⊙ (dy − Σₐ(dy ⊙ y)).
func gradSoftmax(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	axis, err := b.softmaxAxis(n)
	if err != nil {
		return nil, err
	}
	y := n.Output[0]
	s := b.Op("ReduceSum", []string{b.Op("Mul", []string{dy[0], y}), b.ConstI64(axis)}, ortgraph.AInt("keepdims", 1))
	return []string{b.Op("Mul", []string{y, b.Op("Sub", []string{dy[0], s})})}, nil
}

// LogSoftmax: y = x − log Σ eˣ ⇒ dx = dy − eʸ ⊙ Σₐ dy.
func gradLogSoftmax(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	axis, err := b.softmaxAxis(n)
	if err != nil {
		return nil, err
	}
	s := b.Op("ReduceSum", []string{dy[0], b.ConstI64(axis)}, ortgraph.AInt("keepdims", 1))
	p := b.Op("Exp", []string{n.Output[0]})
	return []string{b.Op("Sub", []string{dy[0], b.Op("Mul", []string{p, s})})}, nil
}

// Dropout (training): y = x ⊙ m / (1 − p) ⇒ dx = dy ⊙ m / (1 − p), reusing the mask output.
// In inference mode it is the identity.
func gradDropout(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	for i := 1; i < len(need); i++ {
		if need[i] {
			return nil, fmt.Errorf("Dropout ratio/training_mode have no gradient")
		}
	}
	training := false
	if tm := in(n, 2); tm != "" {
		training = true // a training_mode input means ortq emitted a training Dropout
	}
	if !training {
		g[0] = dy[0]
		return g, nil
	}
	if len(n.Output) < 2 || n.Output[1] == "" {
		return nil, fmt.Errorf("training Dropout without a mask output cannot be differentiated; emit the mask")
	}
	ratio := in(n, 1)
	var scale string
	if ratio == "" {
		scale = b.ConstLike(2, dy[0]) // default ratio 0.5
	} else {
		one := b.ConstLike(1, dy[0])
		scale = b.Op("Div", []string{one, b.Op("Sub", []string{one, b.castLikeV(ratio, dy[0])})})
	}
	zero := b.ConstLike(0, dy[0])
	g[0] = b.Op("Where", []string{n.Output[1], b.Op("Mul", []string{dy[0], scale}), zero})
	return g, nil
}

// GatherElements: y = x[idx] along axis ⇒ dx = scatter-add(zeros(x), idx, dy).
func gradGatherElements(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	if need[1] {
		return nil, fmt.Errorf("GatherElements indices have no gradient")
	}
	x := n.Input[0]
	axis := ortgraph.AttrInt(n, "axis", 0)
	zeros := b.zerosLike(x)
	g[0] = b.Op("ScatterElements", []string{zeros, n.Input[1], dy[0]}, ortgraph.AInt("axis", axis), ortgraph.AString("reduction", "add"))
	return g, nil
}

// zerosLike returns zeros with x's shape and type.
func (b *Builder) zerosLike(x string) string {
	if dt := b.ElemType(x); dt != 0 {
		return b.Op("ConstantOfShape", []string{b.Op("Shape", []string{x})}, ortgraph.ATensor("value", ortgraph.FloatTensor("zero", dt, []int64{1}, []float32{0})))
	}
	return b.Op("Mul", []string{x, b.ConstLike(0, x)})
}

// RMSNormalization (opset 23): y = x·r·s with r = (mean(x²) + ε)^-½ over the normalised
// axes ⇒ with g = dy·s: dx = r·(g − x·r²·mean(g·x)), ds = unbroadcast(dy·x·r). Computed in
// float32 when x is half precision (stash_type 1 semantics).
func gradRMSNormalization(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	x, s := n.Input[0], n.Input[1]
	axis := ortgraph.AttrInt(n, "axis", -1)
	eps := ortgraph.AttrFloat(n, "epsilon", 1e-5)
	rank := b.Rank(x)
	if axis < 0 {
		if rank < 0 && axis != -1 {
			return nil, fmt.Errorf("RMSNormalization with axis %d needs the input rank", axis)
		}
		if rank >= 0 {
			axis += int64(rank)
		}
	}
	var axes []int64
	if axis < 0 { // axis == -1 with unknown rank
		axes = []int64{-1}
	} else {
		if rank < 0 {
			return nil, fmt.Errorf("RMSNormalization needs the input rank")
		}
		for a := axis; a < int64(rank); a++ {
			axes = append(axes, a)
		}
	}
	ax := b.ConstI64(axes...)
	xdt := b.ElemType(x)
	xf, dyf, sf := x, dy[0], s
	if xdt == ortgraph.Float16 || xdt == ortgraph.BF16 {
		to := ortgraph.AInt("to", int64(ortgraph.Float))
		xf, dyf, sf = b.Op("Cast", []string{x}, to), b.Op("Cast", []string{dy[0]}, to), b.Op("Cast", []string{s}, to)
	}
	ms := b.Op("ReduceMean", []string{b.Op("Mul", []string{xf, xf}), ax}, ortgraph.AInt("keepdims", 1))
	r := b.Op("Reciprocal", []string{b.Op("Sqrt", []string{b.Op("Add", []string{ms, b.ConstLike(eps, xf)})})})
	back := func(v, like string) string {
		if xdt == ortgraph.Float16 || xdt == ortgraph.BF16 {
			return b.castLikeV(v, like)
		}
		return v
	}
	if need[0] {
		gg := b.Op("Mul", []string{dyf, sf})
		m := b.Op("ReduceMean", []string{b.Op("Mul", []string{gg, xf}), ax}, ortgraph.AInt("keepdims", 1))
		t := b.Op("Mul", []string{b.Op("Mul", []string{xf, b.Op("Mul", []string{r, r})}), m})
		g[0] = back(b.Op("Mul", []string{r, b.Op("Sub", []string{gg, t})}), x)
	}
	if need[1] {
		g[1] = b.Unbroadcast(back(b.Op("Mul", []string{dyf, b.Op("Mul", []string{xf, r})}), s), s)
	}
	return g, nil
}

// SimplifiedLayerNormalization (ONNX Runtime's RMSNorm over the last axis): y = w·x̂ with
// x̂ = x·r, r = (mean(x²) + ε)^-½ ⇒ with g = dy·w: dx = r·(g − x̂·mean(g·x̂)),
// dw = Σ over the leading axes of dy·x̂.
//
// r is the node's inv_std_var output (index 1) when present, else recomputed. Since
// mean(g·x̂) = r·mean(g·x), x̂ is not needed for the mean in float/double. Full-size ops
// (the rest are [.., 1]): float/double 6 — g, g·x, its mean, x·(r²·mean(g·x)), the Sub,
// ·r; float16 7 — g, x̂ = x·r (r rounded), the product g·x̂ in half precision (x̂ is
// normalised, so g·x̂ grows no further past g than x̂'s few units; g·x with x unnormalised
// could overflow), its mean accumulated in float32 by one product with a constant column
// (halfRowMean: a sum over the hidden axis would overflow half precision), then x̂·m, the
// Sub and ·r in half precision with m rounded (|x̂·m| ≤ |x̂|·rms(g), so nothing there grows
// past what dx holds anyway). No float32 copy of x or g is written.
func gradSimplifiedLayerNorm(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	if len(dy) > 1 && dy[1] != "" {
		return nil, fmt.Errorf("the inv_std_var output is read by differentiated nodes; only Y carries a gradient")
	}
	if len(n.Input) != 2 {
		return nil, fmt.Errorf("expected inputs X and scale, got %d inputs", len(n.Input))
	}
	x, w := n.Input[0], n.Input[1]
	rank := b.Rank(x)
	if axis := ortgraph.AttrInt(n, "axis", -1); axis != -1 && (rank < 0 || axis != int64(rank-1)) {
		return nil, fmt.Errorf("axis %d: only normalisation over the last axis is supported", axis)
	}
	// Shape check: the scale is one weight per element of the last axis.
	if wd := b.Dims(w); wd != nil {
		xd := b.Dims(x)
		if len(wd) != 1 {
			return nil, fmt.Errorf("scale %q has shape %v; expected [hidden]", w, wd)
		}
		if len(xd) > 0 && xd[len(xd)-1] >= 0 && wd[0] >= 0 && xd[len(xd)-1] != wd[0] {
			return nil, fmt.Errorf("scale %q has %d elements and the last axis of %q %d", w, wd[0], x, xd[len(xd)-1])
		}
	}
	xdt := b.ElemType(x)
	half := xdt == ortgraph.Float16 || xdt == ortgraph.BF16
	if xdt == 0 {
		return nil, fmt.Errorf("the element type of %q is not recorded", x)
	}
	ax := b.ConstI64(-1)
	keep := ortgraph.AInt("keepdims", 1)
	f32 := ortgraph.AInt("to", int64(ortgraph.Float))
	saved := len(n.Output) > 1 && n.Output[1] != "" // r is the node's inv_std_var
	xf := x                                         // x in r's precision: cast only to recompute r or for dw
	if half && (!saved || need[1]) {
		xf = b.Op("Cast", []string{x}, f32)
	}
	r := ""
	if saved {
		r = n.Output[1]
	} else {
		eps := ortgraph.AttrFloat(n, "epsilon", 1e-5)
		ms := b.Op("ReduceMean", []string{b.Op("Mul", []string{xf, xf}), ax}, keep)
		r = b.Op("Reciprocal", []string{b.Op("Sqrt", []string{b.Op("Add", []string{ms, b.ConstLike(eps, xf)})})})
	}
	if need[0] {
		// A saved inv_std_var is float32 where stash_type is 1 (its type may not be recorded).
		g[0] = b.rmsNormDX(x, w, r, dy[0], saved && ortgraph.AttrInt(n, "stash_type", 1) == 1)
	}
	if need[1] {
		// Σ over B·S products: accumulated in float32 for half inputs.
		d := dy[0]
		if half {
			d = b.Op("Cast", []string{d}, f32)
		}
		p := b.Op("Mul", []string{d, b.Op("Mul", []string{xf, r})})
		g[1] = b.Unbroadcast(p, w)
		if half {
			g[1] = b.castLikeV(g[1], w)
		}
		if t := b.Type(w); t != nil {
			b.SetType(g[1], t)
		}
	}
	return g, nil
}

// rmsNormDX is the RMSNorm gradient dx = r·(g − x̂·mean(g·x̂)) with g = dy·w and x̂ = x·r, r
// the norm's inv_std_var (savedF32: its own float32 output): one RMSNormGrad node with
// Options.FusedNormGrad for float16 x and w and a saved float32 r; else in float16 with the
// mean as halfRowMean's GEMV, or in x's precision.
func (b *Builder) rmsNormDX(x, w, r, dy string, savedF32 bool) string {
	xdt := b.ElemType(x)
	var dx string
	if b.fusedNorm && savedF32 && xdt == ortgraph.Float16 && b.ElemType(w) == xdt {
		dx = b.Add(ortgraph.NodeSpec{Op: ortgraph.OpRMSNormGrad, Domain: ortgraph.OrtqDomain, Inputs: []string{x, w, r, dy}})[0]
		b.M.SetOpset(ortgraph.OrtqDomain, 1)
	} else if gg := b.Op("Mul", []string{dy, w}); xdt == ortgraph.Float16 || xdt == ortgraph.BF16 {
		rh := b.Op("Cast", []string{r}, ortgraph.AInt("to", int64(xdt)))
		xh := b.Op("Mul", []string{x, rh})
		m := b.halfRowMean(b.Op("Mul", []string{gg, xh}), x, xdt) // mean(g·x̂)
		dx = b.Op("Mul", []string{b.Op("Sub", []string{gg, b.Op("Mul", []string{xh, m})}), rh})
	} else {
		s := b.meanLastAxis(b.Op("Mul", []string{gg, x}), x)
		k := b.Op("Mul", []string{b.Op("Mul", []string{r, r}), s}) // r·mean(g·x̂)
		dx = b.Op("Mul", []string{b.Op("Sub", []string{gg, b.Op("Mul", []string{x, k})}), r})
	}
	// dx has x's type; inference through the [.., 1] statistics may not know it, and without
	// it the readers' Unbroadcast falls back to run-time shape arithmetic.
	if t := b.Type(x); t != nil {
		b.SetType(dx, t)
	}
	return dx
}

// meanLastAxis is the mean of v over its last axis (keepdims), where x has v's shape. With a
// static last dimension it is ReduceSum ÷ H: ONNX Runtime's CUDA provider runs ReduceSum
// over the last axis as a fast matrix reduction but hands ReduceMean to cuDNN (measured on an
// H200: 0.12 ms instead of ≈0.04 ms for a [3584, 3072] float32 tensor).
func (b *Builder) meanLastAxis(v, x string) string {
	ax := b.ConstI64(-1)
	keep := ortgraph.AInt("keepdims", 1)
	if d := b.Dims(x); len(d) > 0 && d[len(d)-1] > 0 {
		sum := b.Op("ReduceSum", []string{v, ax}, keep)
		return b.Op("Div", []string{sum, b.ConstLike(float32(d[len(d)-1]), v)})
	}
	return b.Op("ReduceMean", []string{v, ax}, keep)
}

// halfRowMean returns the mean over the last axis of v (half precision, x's shape) as
// [.., 1] in v's type, accumulated in float32. With the hidden size H known it is one
// product with a constant column, FusedMatMul(v, c, alpha = 2^k/H) with c = 2^-k and 2^k ≥ H:
// cuBLAS accumulates in float32 and applies alpha in float32, and every partial sum it may
// round to half precision (split-K) is at most max|v|, so nothing overflows that v does not.
// One GEMV reading v once replaces a Cast to float32, a ReduceSum over a float32 copy, the
// Div and the Cast back. Unknown H: the Cast, mean and Cast back.
func (b *Builder) halfRowMean(v, x string, dt int32) string {
	d := b.Dims(x)
	if len(d) == 0 || d[len(d)-1] <= 0 {
		f32 := ortgraph.AInt("to", int64(ortgraph.Float))
		return b.Op("Cast", []string{b.meanLastAxis(b.Op("Cast", []string{v}, f32), x)}, ortgraph.AInt("to", int64(dt)))
	}
	h := d[len(d)-1]
	k := bits.Len64(uint64(h - 1)) // the least k with 2^k ≥ h
	key := fmt.Sprintf("const_%s_rowmean_%d", strings.ToLower(ortgraph.DTypeName(dt)), h)
	if b.Initializer(key) == nil {
		col := make([]float32, h)
		for i := range col {
			col[i] = float32(math.Ldexp(1, -k))
		}
		b.AddInitializer(ortgraph.FloatTensor(key, dt, []int64{h, 1}, col))
	}
	m := b.Add(ortgraph.NodeSpec{Op: "FusedMatMul", Domain: "com.microsoft", Inputs: []string{v, key},
		Attrs: []ortgraph.Attr{ortgraph.AFloat("alpha", float32(math.Ldexp(1, k)/float64(h)))}})[0]
	if dims := slices.Clone(b.SymDims(x)); len(dims) == len(d) {
		dims[len(d)-1] = "1"
		b.SetType(m, ortgraph.SymTensorType(dt, dims))
	}
	return m
}
