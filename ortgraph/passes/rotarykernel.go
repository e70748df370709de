package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// RotaryKernel writes each float16 RotaryEmbedding with position ids as one Rotary node of
// ortq's domain (package kernels: 8 channel pairs a thread with 16-byte accesses, in
// float32, rounded once), where ONNX Runtime's kernel reads one element a thread (measured on
// an H100, 3B shape, micro-batch 7: its six rotations a layer took 0.24 ms, a quarter of the
// memory bandwidth; Rotary's take 0.06 ms). prepare runs it last on every training graph with
// --attention-kernels; the backward pass's rotations (the same op with sin negated) are
// rewritten alike.
//
// Pattern: RotaryEmbedding(x, cos, sin, pos) of the default domain. Checks: x, cos and sin
// are float16 and pos is given; not interleaved; rotary_embedding_dim 0 or x's known head
// size (the kernel rotates every channel); cos and sin of rank 2. Rewrite: the node in
// place, its attributes dropped (Rotary reads the layout from x's rank and the head size from cos,
// which RotaryEmbedding sizes to rotary_embedding_dim or, when 0, the head size).
var RotaryKernel = &ortgraph.Pass{
	Name:       "rotary-kernel",
	Doc:        "float16 RotaryEmbedding with position ids → one ai.ortq.Rotary",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runRotaryKernel,
}

func runRotaryKernel(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	for _, n := range g.P.Node {
		if !isOp(n, "RotaryEmbedding") {
			continue
		}
		if why := rotaryKernelCheck(g, n); why != "" {
			res.Skipped = append(res.Skipped, fmt.Sprintf("RotaryEmbedding %q: %s", n.Name, why))
			continue
		}
		n.OpType, n.Domain, n.Attribute = ortgraph.OpRotary, ortgraph.OrtqDomain, nil
		res.Fused++
	}
	res.finish(ctx, "rotary-kernel", "rotary embeddings written as ai.ortq.Rotary", nil, ortgraph.OrtqDomain)
	return res, nil
}

// rotaryKernelCheck is "" where n can become one Rotary node, else why not.
func rotaryKernelCheck(g *ortgraph.Graph, n *onnxpb.NodeProto) string {
	if len(n.Input) != 4 || n.Input[3] == "" {
		return "no position ids"
	}
	for _, v := range n.Input[:3] {
		if g.ElemType(v) != ortgraph.Float16 {
			return fmt.Sprintf("%q is not float16", v)
		}
	}
	if ortgraph.AttrInt(n, "interleaved", 0) != 0 {
		return "interleaved"
	}
	cd := g.Dims(n.Input[1])
	if len(cd) != 2 || len(g.Dims(n.Input[2])) != 2 {
		return "cos and sin are not of rank 2"
	}
	if d := ortgraph.AttrInt(n, "rotary_embedding_dim", 0); d != 0 && d != headSize(g, n) {
		return fmt.Sprintf("rotary_embedding_dim %d is not x's known head size (a partial rotation)", d)
	}
	return ""
}

// headSize is the head size of RotaryEmbedding n's x where its shape tells it, else 0.
func headSize(g *ortgraph.Graph, n *onnxpb.NodeProto) int64 {
	switch d := g.Dims(n.Input[0]); {
	case len(d) == 4 && d[3] > 0:
		return d[3]
	case len(d) == 3 && d[2] > 0 && ortgraph.AttrInt(n, "num_heads", 0) > 0:
		return d[2] / ortgraph.AttrInt(n, "num_heads", 0)
	}
	return 0
}
