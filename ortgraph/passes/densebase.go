package passes

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// DenseBase makes every use of a 4-bit Linear weight in a training graph read one
// dequantization of it computed from initializers alone — DequantizeLinear(data, scales,
// zero points) and its Reshape/Slice to [N, K], with no ordering gate — and turns the forward
// products x·Wᵀ into com.microsoft.FusedMatMul(x, W, transB = 1). The graph then holds W as
// a constant expression that ONNX Runtime folds into a float16 initializer when the session
// is created (with its QDQ handling off: session config session.disable_quant_qdq = 1, which
// train sets for these graphs), so a step reads W like a 16-bit base: no dequantization
// kernel runs, and no transposed copy is folded (transB reads W as it is).
//
// Why: the frozen base never changes, yet the 4-bit step dequantizes it on every product:
// 13 MatMulNBits dequantizations and 7 DequantizeLinear kernels for dx per decoder layer,
// 0.50 ms of the layer's 6.5 ms (H200, Llama-3.2-3B shape, micro-batch 7). Where the GPU
// has room for the 16-bit weights (+3.9 GiB at that shape) the time is worth more than the
// memory; train chooses (--base).
//
// Pattern: a value whose shape-only source (Reshape/Slice with constant operands) is a
// DequantizeLinear (axis 0) of a UINT4 initializer, read by anything: a Transpose(perm
// [1, 0]) read by MatMuls as their right operand (the forward product), or directly (dx =
// dy·W). Rewrite: each such read takes the canonical chain of its weight (one per data
// initializer and chain shape, built from the chain with its scales ungated); the
// Transpose's MatMuls become FusedMatMul with transB; dead chains are pruned.
//
// An NF4/FP4 base (after Bnb4Forward, so that no MatMulBnb4 is left) reads its weights
// through autodiff.Bnb4Weight chains, gated on the activations: each read of such a chain
// takes one copy of it per 4-bit bytes initializer with every gate Where(gate, c, c) of a
// constant c replaced by c, so that it too depends on initializers alone and is folded.
var DenseBase = &ortgraph.Pass{
	Name:       "dense-base",
	Doc:        "every 4-bit weight read through one dequantization of initializers (folded by ONNX Runtime at load), forward products as FusedMatMul(transB)",
	ResultType: reflect.TypeFor[*DenseBaseResult](),
	Run:        runDenseBase,
}

// DenseBaseResult says what DenseBase did: Weights dequantized chains, Products forward
// products turned into FusedMatMul, Reads other reads (dx) redirected.
type DenseBaseResult struct {
	Weights, Products, Reads int
}

func runDenseBase(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &DenseBaseResult{}
	canon := map[string]string{} // chain signature → canonical W
	cons := g.Consumers()
	nodes := append([]*onnxpb.NodeProto(nil), g.P.Node...)
	for _, n := range nodes {
		for i, in := range n.Input {
			if b := autodiff.Bnb4WeightBytes(g, in); b != "" {
				if w := canonicalBnb4(g, b, in, canon, res); w != "" && w != in {
					n.Input[i] = w
					res.Reads++
				}
				continue
			}
			src, chain := autodiff.ShapeOnlySource(g, in)
			if len(chain) == 0 || !isDenseSource(g, src) {
				continue
			}
			w := canonicalChain(g, src, chain, canon, res)
			if isTranspose(n, 1, 0) && allRightMatMuls(cons[n.Output[0]], n.Output[0]) {
				for _, mm := range cons[n.Output[0]] {
					toFusedTransB(mm, w)
					res.Products++
				}
				continue
			}
			if in != w {
				n.Input[i] = w
				res.Reads++
			}
		}
	}
	if res.Weights == 0 {
		return res, nil
	}
	if g.M.OpsetVersion("com.microsoft") < 1 {
		g.M.SetOpset("com.microsoft", 1)
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	g.Prune()
	ctx.Logf("dense-base: %d 4-bit weights dequantized once from initializers; %d forward products as FusedMatMul, %d other reads", res.Weights,
		res.Products, res.Reads)
	return res, nil
}

// isDenseSource reports whether n is a DequantizeLinear (axis 0) of a UINT4 initializer.
func isDenseSource(g *ortgraph.Graph, n *onnxpb.NodeProto) bool {
	if !isDQ(n) || ortgraph.AttrInt(n, "axis", 1) != 0 {
		return false
	}
	d := g.Initializer(n.Input[0])
	return d != nil && d.DataType == int32(onnxpb.TensorProto_UINT4)
}

// canonicalChain returns the weight the chain src → chain (chain[0] last) computes, rebuilt
// once per signature from initializers alone (the scales ungated).
func canonicalChain(g *ortgraph.Graph, src *onnxpb.NodeProto, chain []*onnxpb.NodeProto, canon map[string]string, res *DenseBaseResult) string {
	ins := append([]string(nil), src.Input...)
	ins[1] = ungated(g, ins[1])
	sig := []string{strings.Join(ins, ",")}
	for i := len(chain) - 1; i >= 0; i-- {
		sig = append(sig, chain[i].OpType+"("+strings.Join(chain[i].Input[1:], ",")+")")
	}
	key := strings.Join(sig, "|")
	if w, ok := canon[key]; ok {
		return w
	}
	saved := g.Scope
	g.Scope = "dense/" + src.Input[0]
	defer func() { g.Scope = saved }()
	w := g.Add(ortgraph.NodeSpec{Op: "DequantizeLinear", Inputs: ins, Attrs: src.Attribute})[0]
	for i := len(chain) - 1; i >= 0; i-- {
		c := chain[i]
		w = g.Add(ortgraph.NodeSpec{Op: c.OpType, Inputs: append([]string{w}, c.Input[1:]...), Attrs: c.Attribute})[0]
	}
	if t := g.Type(chain[0].Output[0]); t != nil {
		g.SetType(w, t)
	}
	canon[key] = w
	res.Weights++
	return w
}

// allRightMatMuls reports whether every reader is a MatMul reading v as its right operand
// (and there is one).
func allRightMatMuls(readers []*onnxpb.NodeProto, v string) bool {
	for _, r := range readers {
		if !isOp(r, "MatMul") || len(r.Input) != 2 || r.Input[1] != v || r.Input[0] == v {
			return false
		}
	}
	return len(readers) > 0
}

// toFusedTransB turns MatMul(x, Wᵀ) into FusedMatMul(x, W, transB = 1) in place.
func toFusedTransB(mm *onnxpb.NodeProto, w string) {
	if !isOp(mm, "MatMul") {
		panic(fmt.Sprintf("dense-base: %q is not a MatMul", mm.Name))
	}
	mm.OpType, mm.Domain = "FusedMatMul", "com.microsoft"
	mm.Input = []string{mm.Input[0], w}
	mm.Attribute = []*onnxpb.AttributeProto{ortgraph.AFloat("alpha", 1), ortgraph.AInt("transB", 1)}
}

// canonicalBnb4 returns the weight the NF4/FP4 dequantization chain w of bytes computes,
// built once per bytes initializer from ungated copies of the chain's two factors (the
// gathered codes and the absmax); "" when they depend on anything but constants (the chain
// is then left as it is). A float16 product is taken in float32 and rounded once, which is
// the float16 product exactly (two 11-bit significands multiply exactly in 24 bits), so that
// ONNX Runtime's constant folding, which runs CPU kernels, needs no float16 Mul.
func canonicalBnb4(g *ortgraph.Graph, bytes, w string, canon map[string]string, res *DenseBaseResult) string {
	key := "bnb4|" + bytes
	if c, ok := canon[key]; ok {
		return c
	}
	out := g.Producer(w)            // Reshape to [N, K]
	mul := g.Producer(out.Input[0]) // Mul(codes [blocks, bs], absmax [blocks, 1])
	saved := g.Scope
	g.Scope = "dense/" + bytes
	defer func() { g.Scope = saved }()
	memo := map[string]string{}
	codes, ok1 := ungatedCopy(g, mul.Input[0], memo)
	absmax, ok2 := ungatedCopy(g, mul.Input[1], memo)
	if !ok1 || !ok2 {
		return ""
	}
	dt := g.ElemType(w)
	var c string
	if dt == ortgraph.Float16 {
		f32 := func(v string) string { return g.Op("Cast", []string{v}, ortgraph.AInt("to", int64(ortgraph.Float))) }
		c = g.Op("Cast", []string{g.Op("Mul", []string{f32(codes), f32(absmax)})}, ortgraph.AInt("to", int64(dt)))
	} else {
		c = g.Op("Mul", []string{codes, absmax})
	}
	c = g.Op("Reshape", []string{c, out.Input[1]})
	g.SetType(c, g.Type(w))
	canon[key] = c
	res.Weights++
	return c
}

// ungatedCopy copies the nodes computing v, each Where(gate, c, c) of a constant c taken as
// c; ok is false when v depends on a graph input. memo maps values already copied.
func ungatedCopy(g *ortgraph.Graph, v string, memo map[string]string) (string, bool) {
	if c, ok := memo[v]; ok {
		return c, true
	}
	if g.Initializer(v) != nil {
		return v, true
	}
	n := g.Producer(v)
	if n == nil {
		return "", false
	}
	if isOp(n, "Where") && len(n.Input) == 3 && n.Input[1] == n.Input[2] && g.Initializer(n.Input[1]) != nil {
		return n.Input[1], true
	}
	ins := make([]string, len(n.Input))
	for i, in := range n.Input {
		c, ok := ungatedCopy(g, in, memo)
		if !ok {
			return "", false
		}
		ins[i] = c
	}
	outs := g.Add(ortgraph.NodeSpec{Op: n.OpType, Domain: n.Domain, Inputs: ins, Attrs: n.Attribute, NOut: len(n.Output)})
	for i, o := range n.Output {
		memo[o] = outs[i]
		g.SetType(outs[i], g.Type(o))
	}
	return memo[v], true
}
