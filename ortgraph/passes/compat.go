package passes

import (
	"github.com/ortq/ortq/ortgraph"
)

// ORTCompat works around places where ONNX Runtime 1.29 rejects what the stock exporter
// writes. Measured: the opset-23 export feeds RotaryEmbedding cos/sin caches of batch 1
// ([1, seq, d/2], broadcast in the ONNX spec's reference), and ORT's kernel insists that
// their batch equals x's ("Inputs 'cos_cache' and 'sin_cache' are expected to have the
// same shape as input 'x'"), so any batch > 1 fails. The pass expands the caches to x's
// batch.
var ORTCompat = &ortgraph.Pass{
	Name: "ort-compat",
	Doc:  "adapt exporter output to ONNX Runtime 1.29 kernels (RotaryEmbedding cache batch)",
	Run:  runORTCompat,
}

func runORTCompat(ctx *ortgraph.Context) (any, error) {
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
			return nil, err
		}
		ctx.Logf("ort-compat: expanded the cos/sin caches of %d RotaryEmbedding nodes to the batch", fixed)
	}
	return fixed, nil
}
