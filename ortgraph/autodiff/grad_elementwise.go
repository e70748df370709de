package autodiff

import (
	"fmt"
	"slices"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Add: y = a + b ⇒ da = unbroadcast(dy), db = unbroadcast(dy).
func gradAdd(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	for i := range n.Input {
		if need[i] {
			g[i] = b.Unbroadcast(dy[0], n.Input[i])
		}
	}
	return g, nil
}

// Sub: y = a − b ⇒ da = dy, db = −dy (each unbroadcast).
func gradSub(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	if need[0] {
		g[0] = b.Unbroadcast(dy[0], n.Input[0])
	}
	if need[1] {
		g[1] = b.Unbroadcast(b.Op("Neg", dy[:1]), n.Input[1])
	}
	return g, nil
}

// Mul: y = a·b ⇒ da = dy·b, db = dy·a (each unbroadcast). SiLU, y = x·σ(x), is one rule
// (gradSiLU).
func gradMul(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	if a, g := b.swiGLUOperands(n); a >= 0 && need[a] {
		return gradSwiGLU(b, n, dy, need, a, g)
	}
	if x, s := b.siluOperands(n); x >= 0 && need[x] {
		return gradSiLU(b, n, dy, x, s), nil
	}
	g := grads(n)
	if need[0] {
		g[0] = b.Unbroadcast(b.Op("Mul", []string{dy[0], n.Input[1]}), n.Input[0])
	}
	if need[1] {
		g[1] = b.Unbroadcast(b.Op("Mul", []string{dy[0], n.Input[0]}), n.Input[1])
	}
	return g, nil
}

// siluOperands returns the operand indexes of x and σ(x) when n is Mul(x, Sigmoid(x)) or
// Mul(Sigmoid(x), x) (-1, -1 otherwise).
func (b *Builder) siluOperands(n *onnxpb.NodeProto) (x, s int) {
	if len(n.Input) != 2 || n.Input[0] == n.Input[1] {
		return -1, -1
	}
	for s := range 2 {
		p := b.Producer(n.Input[s])
		if p != nil && p.OpType == "Sigmoid" && p.Domain == "" && p.Input[0] == n.Input[1-s] {
			return 1 - s, s
		}
	}
	return -1, -1
}

// SiLU: y = x·σ ⇒ dx = dy·(σ + x·σ·(1−σ)) = v + v·(x − y) with v = dy·σ; σ's input is
// Absorbed. Four full-size elementwise ops where the Mul and Sigmoid rules apart take six,
// one of them a broadcast Sub(1, σ) (measured on the CUDA provider, H200, Llama-3.2-3B
// shape: the MLP's activation gradient was ≈0.5 ms of each decoder layer's GPU time).
func gradSiLU(b *Builder, n *onnxpb.NodeProto, dy []string, x, s int) []string {
	v := b.Op("Mul", []string{dy[0], n.Input[s]})
	u := b.Op("Sub", []string{n.Input[x], n.Output[0]})
	g := grads(n)
	g[x] = b.Op("Add", []string{v, b.Op("Mul", []string{v, u})})
	g[s] = Absorbed
	return g
}

// swiGLUOperands returns, when Options.FusedKernels is on and n is h = Mul(silu(g), u) (in
// either order) over float16 g and u of one known shape, with n the sole reader of silu(g)
// and the SiLU Mul the sole reader of σ(g), the operand index of silu(g) and g (else -1, "").
func (b *Builder) swiGLUOperands(n *onnxpb.NodeProto) (a int, g string) {
	if !b.fused || len(n.Input) != 2 || b.ElemType(n.Output[0]) != ortgraph.Float16 {
		return -1, ""
	}
	for a := range 2 {
		p := b.Producer(n.Input[a])
		if p == nil || p.OpType != "Mul" || p.Domain != "" || b.readers[n.Input[a]] != 1 {
			continue
		}
		x, s := b.siluOperands(p)
		if x < 0 || b.readers[p.Input[s]] != 1 {
			continue
		}
		g, u := p.Input[x], n.Input[1-a]
		if b.ElemType(g) == ortgraph.Float16 && b.ElemType(u) == ortgraph.Float16 && knownSame(b.SymDims(g), b.SymDims(u)) {
			return a, g
		}
	}
	return -1, ""
}

// knownSame reports whether two shapes are known, fully named and equal.
func knownSame(x, y []string) bool {
	return x != nil && !slices.Contains(x, "") && slices.Equal(x, y)
}

// SwiGLU: h = silu(g)·u ⇒ dg = dh·u·σ·(1 + g·(1−σ)), du = dh·silu(g) with σ = σ(g): one
// SwiGLUGrad node of ortq's domain reading g, u and dh, where the Mul, SiLU and Sigmoid
// rules took six float16 elementwise kernels and the recomputation two more (σ and
// silu(g), which nothing reads then). The SiLU Mul and its Sigmoid are folded: g's
// gradient goes to Builder.folded.
func gradSwiGLU(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool, a int, g string) ([]string, error) {
	u := n.Input[1-a]
	outs := b.Add(ortgraph.NodeSpec{Op: ortgraph.OpSwiGLUGrad, Domain: ortgraph.OrtqDomain, Inputs: []string{g, u, dy[0]}, NOut: 2})
	b.SetType(outs[0], b.Type(g))
	b.SetType(outs[1], b.Type(u))
	b.M.SetOpset(ortgraph.OrtqDomain, 1)
	if err := b.checkGradType(g, outs[0]); err != nil {
		return nil, fmt.Errorf("gradient of %q: %w", g, err)
	}
	b.folded[g] = append(b.folded[g], outs[0])
	dx := grads(n)
	dx[a] = Absorbed
	if need[1-a] {
		dx[1-a] = outs[1]
	}
	return dx, nil
}

// Div: y = a/b ⇒ da = dy/b, db = −dy·a/b² = −dy·y/b.
func gradDiv(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	if need[0] {
		g[0] = b.Unbroadcast(b.Op("Div", []string{dy[0], n.Input[1]}), n.Input[0])
	}
	if need[1] {
		t := b.Op("Div", []string{b.Op("Mul", []string{dy[0], n.Output[0]}), n.Input[1]})
		g[1] = b.Unbroadcast(b.Op("Neg", []string{t}), n.Input[1])
	}
	return g, nil
}

// Neg: y = −x ⇒ dx = −dy.
func gradNeg(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	return []string{b.Op("Neg", dy[:1])}, nil
}

// Sum: y = Σ xᵢ ⇒ dxᵢ = unbroadcast(dy).
func gradSum(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	return gradAdd(b, n, dy, need)
}

// Identity: y = x ⇒ dx = dy.
func gradIdentity(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	return []string{dy[0]}, nil
}

// Cast: y = cast(x) ⇒ dx = cast(dy) back to x's type (a gradient keeps its value's type).
func gradCast(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	return []string{b.castBack(dy[0], n.Input[0])}, nil
}

// CastLike: y = cast(x as t) ⇒ dx = cast(dy) back to x's type; t carries no gradient.
func gradCastLike(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	if need[0] {
		g[0] = b.castBack(dy[0], n.Input[0])
	}
	if need[1] {
		g[1] = b.Op("Mul", []string{n.Input[1], b.ConstLike(0, n.Input[1])})
	}
	return g, nil
}

func (b *Builder) castBack(dy, x string) string {
	if dt := b.ElemType(x); dt != 0 {
		if dt == b.ElemType(dy) {
			return dy
		}
		return b.Op("Cast", []string{dy}, ortgraph.AInt("to", int64(dt)))
	}
	return b.Op("CastLike", []string{dy, x})
}

// Pow: y = xᵉ ⇒ dx = dy·e·xᵉ⁻¹ ; de = dy·y·ln x (only for x > 0).
func gradPow(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	x, e := n.Input[0], n.Input[1]
	if need[0] {
		var t string
		if ev, ok := b.ConstFloats(e); ok && len(ev) == 1 {
			switch ev[0] {
			case 2: // the common RMSNorm case: d(x²) = 2x
				t = b.Op("Mul", []string{x, b.ConstLike(2, x)})
			case 1:
				t = b.Op("Mul", []string{x, b.ConstLike(0, x)})
				t = b.Op("Add", []string{t, b.ConstLike(1, x)})
			default:
				t = b.Op("Mul", []string{b.Op("Pow", []string{x, b.ConstLike(ev[0]-1, x)}), b.ConstLike(ev[0], x)})
			}
		} else {
			em1 := b.Op("Sub", []string{e, b.ConstLike(1, e)})
			t = b.Op("Mul", []string{b.Op("Pow", []string{x, em1}), b.castBack(e, x)})
		}
		g[0] = b.Unbroadcast(b.Op("Mul", []string{dy[0], t}), x)
	}
	if need[1] {
		t := b.Op("Mul", []string{dy[0], b.Op("Mul", []string{n.Output[0], b.Op("Log", []string{x})})})
		g[1] = b.Unbroadcast(b.castBack(t, e), e)
	}
	return g, nil
}

// Sqrt: y = √x ⇒ dx = dy / (2y).
func gradSqrt(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	y := n.Output[0]
	return []string{b.Op("Div", []string{dy[0], b.Op("Mul", []string{y, b.ConstLike(2, y)})})}, nil
}

// Reciprocal: y = 1/x ⇒ dx = −dy·y².
func gradReciprocal(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	y := n.Output[0]
	return []string{b.Op("Neg", []string{b.Op("Mul", []string{dy[0], b.Op("Mul", []string{y, y})})})}, nil
}

// Sigmoid: y = σ(x) ⇒ dx = dy·y·(1−y).
func gradSigmoid(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	y := n.Output[0]
	oneMinus := b.Op("Sub", []string{b.ConstLike(1, y), y})
	return []string{b.Op("Mul", []string{dy[0], b.Op("Mul", []string{y, oneMinus})})}, nil
}

// Exp: y = eˣ ⇒ dx = dy·y.
func gradExp(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	return []string{b.Op("Mul", []string{dy[0], n.Output[0]})}, nil
}

// Log: y = ln x ⇒ dx = dy/x.
func gradLog(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	return []string{b.Op("Div", []string{dy[0], n.Input[0]})}, nil
}

// Tanh: y = tanh x ⇒ dx = dy·(1−y²).
func gradTanh(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	y := n.Output[0]
	t := b.Op("Sub", []string{b.ConstLike(1, y), b.Op("Mul", []string{y, y})})
	return []string{b.Op("Mul", []string{dy[0], t})}, nil
}

// Where: y = c ? a : b ⇒ da = c ? dy : 0, db = c ? 0 : dy (each unbroadcast); c has none.
func gradWhere(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	if need[0] {
		return nil, fmt.Errorf("the condition of Where has no gradient")
	}
	zero := b.ConstLike(0, dy[0])
	if need[1] {
		g[1] = b.Unbroadcast(b.Op("Where", []string{n.Input[0], dy[0], zero}), n.Input[1])
	}
	if need[2] {
		g[2] = b.Unbroadcast(b.Op("Where", []string{n.Input[0], zero, dy[0]}), n.Input[2])
	}
	return g, nil
}

// Max/Min: y = max(a, b, …) ⇒ dxᵢ = dy where xᵢ == y (ties send the gradient to every
// maximal input, as ONNX Runtime's training build did), unbroadcast.
func gradMinMax(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	zero := b.ConstLike(0, dy[0])
	for i, x := range n.Input {
		if need[i] {
			eq := b.Op("Equal", []string{x, n.Output[0]})
			g[i] = b.Unbroadcast(b.Op("Where", []string{eq, dy[0], zero}), x)
		}
	}
	return g, nil
}
