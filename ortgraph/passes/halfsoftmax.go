package passes

import (
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"reflect"
)

// HalfSoftmax rewrites Cast(x → float32) → Softmax → Cast(→ x's type), the way Hugging
// Face's eager attention writes softmax(dtype=float32).to(q.dtype) for a half-precision x,
// as one Softmax on x.
//
// Why: ONNX Runtime's Softmax kernels for float16 already accumulate in float32 and round
// once on output, which is what the cast sandwich computes; the sandwich instead
// materialises two float32 copies of the [batch, heads, seq, seq] scores (plus the float32
// softmax gradient in the backward pass). Measured on the CUDA provider (H200, Llama-3.2-3B
// shape, micro-batch 7): each float32 score tensor is 176 MB, and the casts and float32
// elementwise work were ≈1 ms of every decoder layer's GPU time.
//
// Pattern: Softmax whose input is a Cast to FLOAT of a FLOAT16 value, read by nothing else,
// and whose output is read only by a Cast back to FLOAT16 (not a graph output). Check: the
// input type is known. Rewrite: the Softmax reads the float16 value and its readers read it
// directly; the casts are pruned.
var HalfSoftmax = &ortgraph.Pass{
	Name:       "half-softmax",
	Doc:        "fold Cast(fp16→fp32) → Softmax → Cast(→fp16) into one fp16 Softmax (ORT accumulates in fp32 inside the kernel)",
	ResultType: reflect.TypeFor[int](),
	Run:        runHalfSoftmax,
}

func runHalfSoftmax(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	r := newSoleReaders(g, g.Consumers())
	n := 0
	for _, s := range g.P.Node {
		in, back, ok := halfSoftmaxMatch(g, s, r)
		if !ok {
			continue
		}
		s.Input[0] = in
		g.SetType(s.Output[0], g.Type(back.Output[0]))
		g.ReplaceUses(back.Output[0], s.Output[0])
		n++
	}
	if n > 0 {
		g.Prune()
		if err := g.TopoSort(); err != nil {
			return nil, err
		}
		ctx.Logf("half-softmax: %d float32 softmax casts folded", n)
	}
	return n, nil
}

// halfSoftmaxMatch returns the float16 input of a Cast sandwich around Softmax s and the
// Cast back, or ok = false when s is not one.
func halfSoftmaxMatch(g *ortgraph.Graph, s *onnxpb.NodeProto, r soleReaders) (in string, back *onnxpb.NodeProto, ok bool) {
	if s.OpType != "Softmax" || s.Domain != "" || len(s.Input) != 1 || len(s.Output) != 1 {
		return "", nil, false
	}
	up := g.Producer(s.Input[0])
	if _, sole := r.single(s.Input[0]); !isCastTo(up, ortgraph.Float) || !sole {
		return "", nil, false
	}
	x := up.Input[0]
	if g.ElemType(x) != ortgraph.Float16 {
		return "", nil, false
	}
	back, sole := r.single(s.Output[0])
	if !sole || !isCastTo(back, ortgraph.Float16) || r.outputs[back.Output[0]] {
		return "", nil, false
	}
	return x, back, true
}

func isCastTo(n *onnxpb.NodeProto, to int32) bool {
	return n != nil && n.OpType == "Cast" && n.Domain == "" && ortgraph.AttrInt(n, "to", 0) == int64(to)
}
