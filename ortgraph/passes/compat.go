package passes

import (
	"github.com/ortq/ortq/ortgraph"
	"reflect"
)

// ORTCompat works around places where ONNX Runtime 1.29 rejects or mishandles what the
// stock exporter writes.
//
// RotaryEmbedding: the opset-23 export feeds cos/sin caches of batch 1 ([1, seq, d/2],
// broadcast in the ONNX spec's reference), and ORT's kernel insists that their batch equals
// x's ("Inputs 'cos_cache' and 'sin_cache' are expected to have the same shape as input
// 'x'"), so any batch > 1 fails. The pass expands the caches to x's batch.
//
// GatherND: ORT's CUDA kernel copies its slice sizes from a host vector that is freed after
// the launch, so a step captured in a CUDA graph replays a copy from freed memory (measured on
// an H200: an illegal memory access in the default model's captured step, whose attention
// mask holds a GatherND over the [batch, seq] padding mask). The pass rewrites GatherND of a
// rank-2 tensor by index pairs as a Gather of rows and a GatherElements within them.
var ORTCompat = &ortgraph.Pass{
	Name:       "ort-compat",
	Doc:        "adapt exporter output to ONNX Runtime 1.29 kernels (RotaryEmbedding cache batch, 2-D GatherND)",
	ResultType: reflect.TypeFor[int](),
	Run:        runORTCompat,
}

func runORTCompat(ctx *ortgraph.Context) (any, error) {
	fixed, err := expandRotaryCaches(ctx)
	if err != nil {
		return nil, err
	}
	n, err := rewriteGatherND2D(ctx)
	return fixed + n, err
}

// rewriteGatherND2D replaces GatherND(data [d0, d1], indices [..., 2]) (batch_dims 0) by
// Squeeze(GatherElements(Gather(data, indices[..., 0], axis 0), indices[..., 1:2], axis −1)).
// Its intermediate holds one data row per index pair, which is small for the masks that use
// it ([batch, 1, 1, seq] pairs over a [batch, seq] mask: batch·seq² booleans).
func rewriteGatherND2D(ctx *ortgraph.Context) (int, error) {
	g := ctx.G
	fixed := 0
	for _, n := range append(g.P.Node[:0:0], g.P.Node...) {
		if n.OpType != "GatherND" || n.Domain != "" || len(n.Input) != 2 || ortgraph.AttrInt(n, "batch_dims", 0) != 0 {
			continue
		}
		data, idx := n.Input[0], n.Input[1]
		d := g.SymDims(idx)
		if g.Rank(data) != 2 || len(d) < 2 || d[len(d)-1] != "2" {
			continue
		}
		i0 := g.Op("Gather", []string{idx, g.ScalarI64(0)}, ortgraph.AInt("axis", -1))
		i1 := g.Op("Slice", []string{idx, g.ConstI64(1), g.ConstI64(2), g.ConstI64(-1)})
		rows := g.Op("Gather", []string{data, i0}, ortgraph.AInt("axis", 0))
		picked := g.Op("GatherElements", []string{rows, i1}, ortgraph.AInt("axis", -1))
		out := n.Output[0]
		n.OpType, n.Input, n.Attribute = "Squeeze", []string{picked, g.ConstI64(-1)}, nil
		if t := g.Type(out); t == nil {
			g.SetType(out, ortgraph.SymTensorType(g.ElemType(data), d[:len(d)-1]))
		}
		fixed++
	}
	if fixed > 0 {
		if err := g.TopoSort(); err != nil {
			return 0, err
		}
		ctx.Logf("ort-compat: %d GatherND of index pairs as Gather + GatherElements", fixed)
	}
	return fixed, nil
}

// expandRotaryCaches expands batch-1 RotaryEmbedding caches to x's batch.
func expandRotaryCaches(ctx *ortgraph.Context) (int, error) {
	g := ctx.G
	fixed := 0
	for _, n := range append(g.P.Node[:0:0], g.P.Node...) {
		if n.OpType != "RotaryEmbedding" || n.Domain != "" || len(n.Input) < 3 {
			continue
		}
		if len(n.Input) > 3 && n.Input[3] != "" {
			continue // position_ids given: caches are [max_pos, d/2] tables
		}
		x := n.Input[0]
		batch := g.Op("Slice", []string{g.Op("Shape", []string{x}), g.ConstI64(0), g.ConstI64(1)})
		for i := 1; i <= 2; i++ {
			c := n.Input[i]
			rest := g.Op("Slice", []string{g.Op("Shape", []string{c}), g.ConstI64(1), g.ConstI64(3)})
			shape := g.Op("Concat", []string{batch, rest}, ortgraph.AInt("axis", 0))
			e := g.Op("Expand", []string{c, shape})
			if t := g.Type(c); t != nil {
				d := g.SymDims(c)
				if len(d) == 3 {
					if xd := g.SymDims(x); len(xd) > 0 {
						d[0] = xd[0]
					}
					g.SetType(e, ortgraph.SymTensorType(g.ElemType(c), d))
				}
			}
			n.Input[i] = e
		}
		fixed++
	}
	if fixed > 0 {
		if err := g.TopoSort(); err != nil {
			return 0, err
		}
		ctx.Logf("ort-compat: expanded the cos/sin caches of %d RotaryEmbedding nodes to the batch", fixed)
	}
	return fixed, nil
}
