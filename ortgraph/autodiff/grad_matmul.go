package autodiff

import (
	"fmt"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// swapLast transposes the last two axes of a rank-r value.
func (b *Builder) swapLast(x string, r int) string {
	perm := make([]int64, r)
	for i := range perm {
		perm[i] = int64(i)
	}
	perm[r-2], perm[r-1] = perm[r-1], perm[r-2]
	return b.Op("Transpose", []string{x}, ortgraph.AInts("perm", perm...))
}

// MatMul: Y = A·B ⇒ dA = dY·Bᵀ, dB = Aᵀ·dY, each unbroadcast over batch axes. When B is a
// matrix and A a batch of rows (the Linear case), dB folds the batch into one GEMM
// (Aᵀ·dY over all rows) instead of a batched product followed by a reduction.
func gradMatMul(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	A, B := n.Input[0], n.Input[1]
	ra, rb := b.Rank(A), b.Rank(B)
	if ra < 0 || rb < 0 {
		return nil, fmt.Errorf("MatMul gradient needs the ranks of %q and %q; the graph carries no shape for them (run shape inference on the model)", A, B)
	}
	if ra < 2 || rb < 2 {
		return nil, fmt.Errorf("MatMul gradient for 1-D operands (%q rank %d, %q rank %d) is not supported", A, ra, B, rb)
	}
	if need[0] {
		if w := b.redequantize(B, dy[0]); w != "" {
			g[0] = b.Unbroadcast(b.Op("MatMul", []string{dy[0], w}), A)
		} else {
			g[0] = b.Unbroadcast(b.Op("MatMul", []string{dy[0], b.swapLast(B, rb)}), A)
		}
	}
	if need[1] {
		if rb == 2 && ra > 2 {
			k := b.Op("Gather", []string{b.Op("Shape", []string{A}), b.ConstI64(-1)})
			nn := b.Op("Gather", []string{b.Op("Shape", []string{dy[0]}), b.ConstI64(-1)})
			a2 := b.Op("Reshape", []string{A, b.Op("Concat", []string{b.ConstI64(-1), k}, ortgraph.AInt("axis", 0))})
			d2 := b.Op("Reshape", []string{dy[0], b.Op("Concat", []string{b.ConstI64(-1), nn}, ortgraph.AInt("axis", 0))})
			g[1] = b.Op("Gemm", []string{a2, d2}, ortgraph.AInt("transA", 1))
		} else {
			g[1] = b.Unbroadcast(b.Op("MatMul", []string{b.swapLast(A, ra), dy[0]}), B)
		}
	}
	return g, nil
}

// Gemm: Y = α·op(A)·op(B) + β·C ⇒ with op(X) = X or Xᵀ:
// d op(A) = α·dY·op(B)ᵀ, d op(B) = α·op(A)ᵀ·dY, dC = β·unbroadcast(dY).
func gradGemm(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	A, B := n.Input[0], n.Input[1]
	alpha := ortgraph.AttrFloat(n, "alpha", 1)
	beta := ortgraph.AttrFloat(n, "beta", 1)
	ta, tb := ortgraph.AttrInt(n, "transA", 0), ortgraph.AttrInt(n, "transB", 0)
	scale := func(v string, s float32) string {
		if s == 1 {
			return v
		}
		return b.Op("Mul", []string{v, b.ConstLike(s, v)})
	}
	if need[0] {
		// dA = dY·op(B)ᵀ when A is not transposed; (dY·op(B)ᵀ)ᵀ = op(B)·dYᵀ otherwise.
		if ta == 0 {
			g[0] = b.Op("Gemm", []string{dy[0], B}, ortgraph.AInt("transB", 1-tb))
		} else {
			g[0] = b.Op("Gemm", []string{B, dy[0]}, ortgraph.AInt("transA", tb), ortgraph.AInt("transB", 1))
		}
		g[0] = scale(g[0], alpha)
	}
	if need[1] {
		if tb == 0 {
			g[1] = b.Op("Gemm", []string{A, dy[0]}, ortgraph.AInt("transA", 1-ta))
		} else {
			g[1] = b.Op("Gemm", []string{dy[0], A}, ortgraph.AInt("transA", 1), ortgraph.AInt("transB", ta))
		}
		g[1] = scale(g[1], alpha)
	}
	if len(n.Input) > 2 && need[2] {
		g[2] = b.Unbroadcast(scale(dy[0], beta), n.Input[2])
	}
	return g, nil
}

// MatMulNBits: Y = A·Wᵀ with W [N, K] stored as 4-bit blocks ⇒ dA = dY·W, where W is
// dequantized from the very same bytes through DequantizeLinear (a UINT4 [N·Blocks,
// BlockSize] view dequantized per axis 0, one scale per block, reshaped to [N, K]; see
// DequantizedWeight), so no second copy of the weight is stored; the 4-bit weight itself is
// frozen.
func gradMatMulNBits(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	for i := 1; i < len(need); i++ {
		if need[i] {
			return nil, fmt.Errorf("MatMulNBits input %d (%q) is frozen 4-bit data and has no gradient", i, n.Input[i])
		}
	}
	w, err := b.DequantizedWeight(n)
	if err != nil {
		return nil, err
	}
	g[0] = b.Op("MatMul", []string{dy[0], w})
	return g, nil
}

// DequantizeLinear: quantized data is frozen; only the scale would carry a gradient and
// ortq never trains scales, so asking for one is an error.
func gradDequantizeLinear(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	return nil, fmt.Errorf("DequantizeLinear feeds frozen quantized weights; ortq does not train quantization scales")
}

// DequantizedWeight returns W [N, K] for a MatMulNBits node with 4-bit B. B's bytes are
// declared a second time as a UINT4 tensor [N·Blocks, BlockSize] — one row per block, the
// same bytes, since every block holds an even number of codes — and dequantized per axis 0
// by DequantizeLinear (opset 21): one scale and one zero point per row, i.e. per block, read
// through 1-D views [N·Blocks] of the scales and zero points. A Reshape to [N, Blocks·BlockSize]
// (and a Slice to [N, K] when K is padded to whole blocks) gives W. The values are those of
// DequantizeLinear blocked along K over the UINT4 [N, K] view, which is also what the Go
// dequantization gives; ONNX Runtime's per-axis kernel is faster than its blocked one (CUDA,
// Llama-3.2-3B shapes: 0.087 vs 0.132 ms for 8192×3072). The Reshape also keeps the
// DequantizeLinear's output to a single reader, so ONNX Runtime's EnsureUniqueDQForNodeUnit
// (which gives every reader of a DequantizeLinear its own copy of the node) has nothing to
// duplicate when the W it feeds is read twice (see passes.Recompute's reuse).
//
// Views of the same initializer are shared between all readers. Views are initializers of
// their own, holding the same bytes: the artifacts store them once (ortgraph.SaveShared
// shares identical bytes), and a training graph, where nothing else reads MatMulNBits' own
// B and scales once dq-forward has run, holds one copy of each.
func (b *Builder) DequantizedWeight(n *onnxpb.NodeProto) (string, error) {
	bits := ortgraph.AttrInt(n, "bits", 4)
	if bits != 4 {
		return "", fmt.Errorf("MatMulNBits with bits=%d: only 4-bit weights are supported", bits)
	}
	K := ortgraph.AttrInt(n, "K", 0)
	N := ortgraph.AttrInt(n, "N", 0)
	bs := ortgraph.AttrInt(n, "block_size", 0)
	if K <= 0 || N <= 0 || bs <= 0 || bs%2 != 0 {
		return "", fmt.Errorf("MatMulNBits without valid K, N, block_size attributes")
	}
	blocks := (K + bs - 1) / bs
	rows := N * blocks
	Bname, scales := n.Input[1], n.Input[2]
	Bt := b.Initializer(Bname)
	if Bt == nil {
		return "", fmt.Errorf("MatMulNBits weight %q is not an initializer", Bname)
	}
	view := Bname + "_uint4"
	if b.Initializer(view) == nil {
		raw, err := b.M.TensorBytes(Bt)
		if err != nil {
			return "", err
		}
		if int64(len(raw)) != rows*bs/2 {
			return "", fmt.Errorf("MatMulNBits weight %q has %d bytes, want N·blocks·block_size/2 = %d", Bname, len(raw), rows*bs/2)
		}
		b.AddInitializer(ortgraph.BytesTensor(view, ortgraph.Uint4, []int64{rows, bs}, raw))
	}
	zpView := Bname + "_zp_uint4"
	if b.Initializer(zpView) == nil {
		zp := make([]byte, (rows+1)/2)
		if zname := in(n, 3); zname != "" {
			zt := b.Initializer(zname)
			if zt == nil {
				return "", fmt.Errorf("MatMulNBits zero points %q are not an initializer", zname)
			}
			raw, err := b.M.TensorBytes(zt)
			if err != nil {
				return "", err
			}
			if zt.DataType != ortgraph.Uint8 {
				return "", fmt.Errorf("MatMulNBits zero points %q of type %s: only packed uint8 is supported", zname, ortgraph.DTypeName(zt.DataType))
			}
			rowBytes := (blocks + 1) / 2
			if int64(len(raw)) != N*rowBytes {
				return "", fmt.Errorf("MatMulNBits zero points %q have %d bytes, want %d", zname, len(raw), N*rowBytes)
			}
			// Repack rows of ceil(blocks/2) bytes into one contiguous UINT4 stream.
			for r := int64(0); r < N; r++ {
				for c := int64(0); c < blocks; c++ {
					v := raw[r*rowBytes+c/2] >> (4 * (c % 2)) & 0xf
					idx := r*blocks + c
					zp[idx/2] |= v << (4 * (idx % 2))
				}
			}
		} else {
			for i := range zp {
				zp[i] = 0x88 // symmetric: implicit zero point 8
			}
		}
		b.AddInitializer(ortgraph.BytesTensor(zpView, ortgraph.Uint4, []int64{rows}, zp))
	}
	sc, err := b.scalesPerRow(scales, rows)
	if err != nil {
		return "", err
	}
	w := b.Op("DequantizeLinear", []string{view, sc, zpView}, ortgraph.AInt("axis", 0))
	w = b.Op("Reshape", []string{w, b.ConstI64(N, blocks*bs)})
	if blocks*bs != K {
		w = b.Op("Slice", []string{w, b.ConstI64(0), b.ConstI64(K), b.ConstI64(1)})
	}
	if dt := b.ElemType(n.Input[0]); dt != 0 {
		b.SetType(w, ortgraph.TensorType(dt, []int64{N, K}))
	}
	return w, nil
}

// scalesPerRow returns MatMulNBits' scales (N·Blocks values, stored [N, Blocks] or flat) as
// a 1-D [N·Blocks] value, the x_scale of a per-axis DequantizeLinear: the initializer itself
// when it is flat already, else a view of it named <scales>_1d holding the same bytes (shared
// between readers), and a Reshape only when the scales are not an initializer.
func (b *Builder) scalesPerRow(scales string, rows int64) (string, error) {
	t := b.Initializer(scales)
	if t == nil {
		return b.Op("Reshape", []string{scales, b.ConstI64(rows)}), nil
	}
	if ortgraph.NumElements(t.Dims) != rows {
		return "", fmt.Errorf("MatMulNBits scales %q have shape %v, want N·blocks = %d values", scales, t.Dims, rows)
	}
	if len(t.Dims) == 1 {
		return scales, nil
	}
	view := scales + "_1d"
	if b.Initializer(view) == nil {
		raw, err := b.M.TensorBytes(t)
		if err != nil {
			return "", err
		}
		b.AddInitializer(ortgraph.BytesTensor(view, t.DataType, []int64{rows}, raw))
	}
	return view, nil
}

// DequantizedWeight returns W [N, K] of a MatMulNBits node, dequantized by a
// DequantizeLinear over a UINT4 view of the node's own 4-bit bytes (see Builder's method).
// Passes use it to express a 4-bit Linear with standard ops.
func DequantizedWeight(g *ortgraph.Graph, n *onnxpb.NodeProto) (string, error) {
	b := &Builder{Graph: g, opset: g.M.OpsetVersion("")}
	return b.DequantizedWeight(n)
}

// redequantize handles B = Transpose(W) where W is a frozen 4-bit weight dequantized from
// constants: DequantizeLinear(W₄) followed by nothing or by shape-only Reshape/Slice nodes with
// constant operands (DequantizedWeight's per-axis chain, see passes.DQForward). Instead of
// reading the forward pass's fp16 W — which would keep every layer's dequantized weight alive
// from the forward to the backward pass — it dequantizes again right where the gradient needs
// it, re-emitting the same chain. The scales pass through Where(isnan(dy[0]), s, s), a no-op
// that makes the node depend on dy, so ONNX Runtime can neither run it early nor merge it with
// the forward node (common-subexpression elimination). It returns Bᵀ = W, or "" when B is not
// such a weight.
func (b *Builder) redequantize(B, dy string) string {
	t := b.Producer(B)
	if t == nil || t.OpType != "Transpose" || t.Domain != "" {
		return ""
	}
	if perm, ok := ortgraph.AttrInts(t, "perm"); !ok || len(perm) != 2 || perm[0] != 1 || perm[1] != 0 {
		return ""
	}
	// tail: the Reshape/Slice between the DequantizeLinear and the Transpose, last first.
	dq, tail := ShapeOnlySource(b.Graph, t.Input[0])
	if len(tail) > 4 || dq == nil || dq.OpType != "DequantizeLinear" || dq.Domain != "" || len(dq.Input) < 2 {
		return ""
	}
	for _, in := range dq.Input {
		if in != "" && b.Initializer(in) == nil {
			return ""
		}
	}
	first := b.Op("Slice", []string{b.Op("Reshape", []string{dy, b.ConstI64(-1)}), b.ConstI64(0), b.ConstI64(1)})
	cond := b.Op("IsNaN", []string{first})
	ins := append([]string(nil), dq.Input...)
	ins[1] = b.Op("Where", []string{cond, ins[1], ins[1]})
	w := b.Add(ortgraph.NodeSpec{Op: "DequantizeLinear", Inputs: ins, Attrs: dq.Attribute})[0]
	for i := len(tail) - 1; i >= 0; i-- {
		ins := append([]string(nil), tail[i].Input...)
		ins[0] = w
		w = b.Add(ortgraph.NodeSpec{Op: tail[i].OpType, Inputs: ins, Attrs: tail[i].Attribute})[0]
	}
	if tt := b.Type(t.Input[0]); tt != nil {
		b.SetType(w, tt)
	}
	return w
}

// ShapeOnlySource follows v back through the shape-only nodes (IsShapeOnly) that produce it
// and returns the first other producer (nil for a graph input or initializer) and the
// shape-only nodes passed, v's producer first: e.g. the DequantizeLinear of
// DequantizedWeight's chain and its Reshape/Slice.
func ShapeOnlySource(g *ortgraph.Graph, v string) (src *onnxpb.NodeProto, chain []*onnxpb.NodeProto) {
	src = g.Producer(v)
	for src != nil && IsShapeOnly(g, src) {
		chain = append(chain, src)
		src = g.Producer(src.Input[0])
	}
	return src, chain
}

// IsShapeOnly reports whether n is a Reshape or Slice of the default domain whose operands
// other than the data are initializers: a node that only rearranges or cuts a constant-shaped
// value, as in DequantizedWeight's chain.
func IsShapeOnly(g *ortgraph.Graph, n *onnxpb.NodeProto) bool {
	if n.Domain != "" || (n.OpType != "Reshape" && n.OpType != "Slice") || len(n.Input) < 2 || len(n.Output) != 1 {
		return false
	}
	for _, in := range n.Input[1:] {
		if in != "" && g.Initializer(in) == nil {
			return false
		}
	}
	return true
}
