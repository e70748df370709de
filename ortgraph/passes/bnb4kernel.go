package passes

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Bnb4Kernel writes each float16 NF4/FP4 dequantization chain that a step runs
// (autodiff.Bnb4Weight: the gated bytes cast to int32, a Gather of the [256, 2] code table,
// the product by each block's absmax, two Reshapes) as one DequantBnb4 node of ortq's domain
// (package kernels: a table lookup a byte, 16-byte stores), where ONNX Runtime runs a kernel
// for each step of the chain and moves about 23 bytes for every stored byte. prepare runs it
// last on every training graph with --bnb4-kernel.
//
// Pattern: Reshape(Mul(Reshape(Gather(lut, Cast(Where(gate, B, B), to int32)), [blocks, bs]),
// Reshape(absmax, [blocks, 1])), [N, K]). Checks: lut is a float16 [256, 2] initializer;
// absmax and the result are float16; the result's shape [N, K] is known; every value inside
// the chain is read only by it. The dense steps' chains (DenseBase: no gate, folded into an
// initializer when ONNX Runtime loads the step) are not matched: a custom node would stop the
// folding. Rewrite: the last Reshape becomes DequantBnb4(Where's output, lut, absmax) with
// attributes N and K; the rest of the chain goes.
var Bnb4Kernel = &ortgraph.Pass{
	Name:       "bnb4-kernel",
	Doc:        "float16 NF4/FP4 dequantization chains (Cast, Gather, Mul, Reshapes) → one ai.ortq.DequantBnb4",
	ResultType: reflect.TypeFor[*FusionResult](),
	Run:        runBnb4Kernel,
}

// bnb4Chain is one matched dequantization chain, last node first.
type bnb4Chain struct {
	out, mul, shape, gather, cast, absShape *onnxpb.NodeProto
	bytes, lut, absmax                      string
}

func runBnb4Kernel(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &FusionResult{}
	r := newSoleReaders(g, g.Consumers())
	var gone []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		c := matchBnb4Chain(g, n)
		if c == nil {
			continue
		}
		d := g.Dims(n.Output[0])
		if why := c.check(g, r, d); why != "" {
			res.Skipped = append(res.Skipped, fmt.Sprintf("Reshape %q: %s", n.Name, why))
			continue
		}
		n.OpType, n.Domain, n.Input = ortgraph.OpDequantBnb4, ortgraph.OrtqDomain, []string{c.bytes, c.lut, c.absmax}
		n.Attribute = []*onnxpb.AttributeProto{ortgraph.AInt("N", d[0]), ortgraph.AInt("K", d[1])}
		gone = append(gone, c.mul, c.shape, c.gather, c.cast, c.absShape)
		res.Fused++
	}
	res.finish(ctx, "bnb4-kernel", "4-bit dequantization chains written as ai.ortq.DequantBnb4", gone, ortgraph.OrtqDomain)
	return res, nil
}

// matchBnb4Chain returns the chain ending in Reshape n, or nil.
func matchBnb4Chain(g *ortgraph.Graph, n *onnxpb.NodeProto) *bnb4Chain {
	c := &bnb4Chain{out: n}
	if !isOp(n, "Reshape") {
		return nil
	}
	if c.mul = g.Producer(n.Input[0]); !isOp(c.mul, "Mul") {
		return nil
	}
	c.shape, c.absShape = g.Producer(c.mul.Input[0]), g.Producer(c.mul.Input[1])
	if !isOp(c.shape, "Reshape") || !isOp(c.absShape, "Reshape") {
		return nil
	}
	if c.gather = g.Producer(c.shape.Input[0]); !isOp(c.gather, "Gather") {
		return nil
	}
	if c.cast = g.Producer(c.gather.Input[1]); !isOp(c.cast, "Cast") || ortgraph.AttrInt(c.cast, "to", 0) != int64(onnxpb.TensorProto_INT32) {
		return nil
	}
	where := g.Producer(c.cast.Input[0])
	if !isOp(where, "Where") || len(where.Input) != 3 || where.Input[1] != where.Input[2] {
		return nil
	}
	c.bytes, c.lut, c.absmax = c.cast.Input[0], c.gather.Input[0], c.absShape.Input[0]
	return c
}

// check is "" where the chain can become one DequantBnb4 node writing [N, K] (d), else why not.
func (c *bnb4Chain) check(g *ortgraph.Graph, r soleReaders, d []int64) string {
	if lut := g.Initializer(c.lut); lut == nil || lut.DataType != ortgraph.Float16 || !slices.Equal(lut.Dims, []int64{256, 2}) {
		return fmt.Sprintf("the table %q is not a float16 [256, 2] initializer", c.lut)
	}
	if g.ElemType(c.absmax) != ortgraph.Float16 || g.ElemType(c.out.Output[0]) != ortgraph.Float16 {
		return "the absmax or the weight is not float16"
	}
	if len(d) != 2 || d[0] <= 0 || d[1] <= 0 {
		return fmt.Sprintf("the weight's shape %v is not a known [N, K]", d)
	}
	for _, n := range []*onnxpb.NodeProto{c.mul, c.shape, c.gather, c.cast, c.absShape} {
		if _, only := r.single(n.Output[0]); !only {
			return fmt.Sprintf("%q is read outside the chain", n.Output[0])
		}
	}
	return ""
}
