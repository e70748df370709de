package passes

import (
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// docMaskGraph is `ortq import`'s mask and rotary idiom over x [batch, 2, seq, 4]: an additive
// mask Where(Or(And(causal, Unsqueeze(Cast(attention_mask → bool))), diag), 0, −inf) added
// to x·xᵀ, and a RotaryEmbedding of x with [1, seq, 2] caches from Range(0, seq); variants:
//
//	"import":     as above (rewritten)
//	"float-mask": attention_mask also read by a Cast to float (left alone: ids would be values)
//	"no-mask":    no attention_mask input (left alone)
func docMaskGraph(variant string) *ortgraph.Graph {
	sym := func(elem int32, d ...string) *onnxpb.TypeProto { return ortgraph.SymTensorType(elem, d) }
	ins := []*onnxpb.ValueInfoProto{{Name: "x", Type: sym(ortgraph.Float, "batch", "2", "seq", "4")}}
	if variant != "no-mask" {
		ins = append(ins, &onnxpb.ValueInfoProto{Name: AttentionMaskInput, Type: sym(ortgraph.Int64, "batch", "seq")})
	}
	g, m := testModel("doc-mask", 23, ins...)
	set := func(v string, t *onnxpb.TypeProto) string { g.SetType(v, t); return v }
	seq := g.Op("Gather", []string{g.Op("Shape", []string{"x"}), g.ScalarI64(2)}, ortgraph.AInt("axis", 0))
	pos := set(g.Op("Range", []string{g.ScalarI64(0), seq, g.ScalarI64(1)}), sym(ortgraph.Int64, "seq"))
	f := g.Op("Mul", []string{g.Op("Unsqueeze", []string{g.Op("Cast", []string{pos}, ortgraph.AInt("to", int64(ortgraph.Float))), g.ConstI64(1)}),
		g.ConstF(ortgraph.Float, 0.5)})
	cache := func(op string) string {
		return set(g.Op("Unsqueeze", []string{g.Op(op, []string{f}), g.ConstI64(0)}), sym(ortgraph.Float, "1", "seq", "2"))
	}
	y := set(g.Op("RotaryEmbedding", []string{"x", cache("Cos"), cache("Sin")}), sym(ortgraph.Float, "batch", "2", "seq", "4"))
	scores := g.Op("MatMul", []string{y, g.Op("Transpose", []string{y}, ortgraph.AInts("perm", 0, 1, 3, 2))})
	if variant != "no-mask" {
		q := g.Op("Unsqueeze", []string{pos, g.ConstI64(1)})
		k := g.Op("Unsqueeze", []string{pos, g.ConstI64(0)})
		causal := g.Op("LessOrEqual", []string{k, q})
		ok := g.Op("Unsqueeze", []string{g.Op("Cast", []string{AttentionMaskInput}, ortgraph.AInt("to", int64(ortgraph.Bool))), g.ConstI64(1, 2)})
		allowed := set(g.Op("Or", []string{g.Op("And", []string{causal, ok}), g.Op("Equal", []string{k, q})}), sym(ortgraph.Bool, "batch", "1", "seq", "seq"))
		scores = g.Op("Add", []string{scores, g.Op("Where", []string{allowed, g.ConstF(ortgraph.Float, 0), g.ConstF(ortgraph.Float, -1e9)})})
		if variant == "float-mask" {
			fm := g.Op("Cast", []string{AttentionMaskInput}, ortgraph.AInt("to", int64(ortgraph.Float)))
			scores = g.Op("Mul", []string{scores, g.Op("Unsqueeze", []string{fm, g.ConstI64(1, 3)})})
		}
	}
	out := g.Op("Softmax", []string{scores}, ortgraph.AInt("axis", -1))
	m.Graph.Output = []*onnxpb.ValueInfoProto{{Name: out, Type: sym(ortgraph.Float, "batch", "2", "seq", "seq")}}
	g.Reindex()
	return g
}
