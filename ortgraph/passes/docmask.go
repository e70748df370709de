package passes

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Graph inputs the DocMask pass gives meaning to.
const (
	// AttentionMaskInput carries document ids after DocMask: 0 = padding, 1..k = the
	// document of the row a token belongs to. A 0/1 mask is the plain padding mask.
	AttentionMaskInput = "attention_mask"
	// PositionIDsInput is the rotary position of every token, [batch, seq] int64; DocMask
	// adds it where the graph counted positions itself.
	PositionIDsInput = "position_ids"
)

// DocMask lets several documents share a row without attending to each other: the graph's
// attention_mask input then carries document ids (0 = padding, 1..k = document within the
// row) and its rotary embeddings read a position_ids input, so positions can restart at 0
// for each document.
//
// Why: packing documents into fixed-length rows keeps every token useful, but with one
// causal mask per row a document's tokens attend to the documents before it (the seed's
// plain concatenation). Restricting attention to the document keeps the rows packed (fixed
// shapes, so CUDA-graph capture still works) and the loss of each document independent of
// its neighbours, as torchtune's and TRL's packing do.
//
// Pattern, mask: attention_mask read only by Shape and Cast(→ BOOL) (the exporter's padding
// term, and `ortq import`'s); from the Cast, the boolean values derived through Unsqueeze,
// Squeeze, Reshape, Expand, Gather*, And and Or up to the rank-4 [batch, 1, query, key]
// boolean masks that a Where (into the additive mask) or an Attention (as its mask) reads.
// Pattern, positions: every RotaryEmbedding node (Rotary runs first) reads cos/sin caches
// [1, seq, d/2] or position ids that are computed from Range(0, …) and shapes alone, never
// from an input's values. Checks (any failing one leaves the whole graph as it is and says
// why in the log; train then offers only plain concatenation): the above, and at least one
// mask and one RotaryEmbedding found. Rewrite: each mask m becomes
//
//	m ∧ (seg[b,i] = seg[b,j] ∨ seg[b,i] = 0),   seg = attention_mask
//
// so a real token attends to keys that are causal, not padding (the exporter's terms) and
// in its own document; a padding query keeps its old row (its output has no label, and no
// row becomes empty), which makes a 0/1 mask give exactly the outputs of the graph before.
// Caches become [seq, d/2] tables (Squeeze of the batch-1 axis: row p is position p) and
// every RotaryEmbedding reads position_ids, added as an input [batch, seq] when missing.
// Neither input has a gradient: both reach the loss through integers and booleans only.
var DocMask = &ortgraph.Pass{
	Name:       "doc-mask",
	Doc:        "attention_mask as document ids (block-diagonal causal mask) and rotary positions from a position_ids input",
	ResultType: reflect.TypeFor[*DocMaskResult](),
	Run:        runDocMask,
}

// DocMaskResult says what DocMask did.
type DocMaskResult struct {
	Masks   int      // boolean attention masks restricted to one document
	Rotary  int      // RotaryEmbedding nodes reading position_ids
	Skipped []string // why the graph was left as it is
}

// DocumentIDs reports whether the graph now takes document ids and positions.
func (r *DocMaskResult) DocumentIDs() bool { return r.Masks > 0 && r.Rotary > 0 }

func runDocMask(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &DocMaskResult{}
	cons := g.Consumers()
	masks, why := docMasks(g, cons)
	if why == "" {
		var rot []*onnxpb.NodeProto
		rot, why = rotaryPositions(g)
		if why == "" {
			rewriteDocMasks(g, cons, masks)
			rewriteRotaryPositions(g, rot)
			res.Masks, res.Rotary = len(masks), len(rot)
			if err := g.TopoSort(); err != nil {
				return nil, err
			}
			g.Prune()
		}
	}
	if why != "" {
		res.Skipped = append(res.Skipped, why)
		ctx.Logf("doc-mask: left as it is: %s; packed documents can only be concatenated", why)
		return res, nil
	}
	ctx.Logf("doc-mask: %d attention masks read document ids, %d RotaryEmbedding nodes read position_ids", res.Masks, res.Rotary)
	return res, nil
}

// maskFollow are the ops through which a boolean derived from the padding mask is followed
// (data inputs only for the shape ops).
var maskFollow = map[string]bool{"Unsqueeze": true, "Squeeze": true, "Reshape": true, "Expand": true,
	"Gather": true, "GatherND": true, "GatherElements": true, "And": true, "Or": true, "Identity": true}

// docMasks returns the boolean masks derived from attention_mask that attention reads, or
// the reason the graph does not fit the pattern.
func docMasks(g *ortgraph.Graph, cons map[string][]*onnxpb.NodeProto) ([]string, string) {
	if !slices.ContainsFunc(g.P.Input, func(vi *onnxpb.ValueInfoProto) bool { return vi.Name == AttentionMaskInput }) {
		return nil, "the graph has no attention_mask input"
	}
	var work []string
	for _, n := range cons[AttentionMaskInput] {
		switch {
		case n.OpType == "Shape" && n.Domain == "":
		case isCastTo(n, ortgraph.Bool):
			work = append(work, n.Output[0])
		default:
			return nil, fmt.Sprintf("attention_mask is read by %s %q, which would see document ids as values", n.OpType, n.Name)
		}
	}
	if len(work) == 0 {
		return nil, "attention_mask is not cast to a boolean padding mask"
	}
	seen := map[string]bool{}
	var masks []string
	for len(work) > 0 {
		v := work[0]
		work = work[1:]
		if seen[v] {
			continue
		}
		seen[v] = true
		frontier := false
		for _, n := range cons[v] {
			switch {
			case maskFollow[n.OpType] && n.Domain == "" && (n.Input[0] == v || n.OpType == "And" || n.OpType == "Or"):
				work = append(work, n.Output[0])
			case n.OpType == "Where" && n.Domain == "" && n.Input[0] == v && !slices.Contains(n.Input[1:], v),
				n.OpType == "Attention" && n.Domain == "" && len(n.Input) > 3 && n.Input[3] == v:
				frontier = true
			default:
				return nil, fmt.Sprintf("the padding mask %q is read by %s %q", v, n.OpType, n.Name)
			}
		}
		if frontier {
			if g.Rank(v) != 4 || g.ElemType(v) != ortgraph.Bool {
				return nil, fmt.Sprintf("the attention mask %q is not a rank-4 boolean [batch, 1, query, key]", v)
			}
			masks = append(masks, v)
		}
	}
	if len(masks) == 0 {
		return nil, "no attention mask derived from attention_mask reaches a Where or an Attention"
	}
	return masks, ""
}

// rewriteDocMasks restricts every mask to pairs of tokens of one document (or a padding
// query), for the frontier readers of the masks only.
func rewriteDocMasks(g *ortgraph.Graph, cons map[string][]*onnxpb.NodeProto, masks []string) {
	d := g.SymDims(AttentionMaskInput)
	if len(d) != 2 {
		d = []string{"batch", "seq"}
	}
	typ := func(elem int32, dims ...string) *onnxpb.TypeProto { return ortgraph.SymTensorType(elem, dims) }
	old := g.Scope
	g.Scope = "/model/doc_mask"
	defer func() { g.Scope = old }()
	q := g.Op("Unsqueeze", []string{AttentionMaskInput, g.ConstI64(1, 3)})
	g.SetType(q, typ(ortgraph.Int64, d[0], "1", d[1], "1"))
	k := g.Op("Unsqueeze", []string{AttentionMaskInput, g.ConstI64(1, 2)})
	g.SetType(k, typ(ortgraph.Int64, d[0], "1", "1", d[1]))
	same := g.Op("Equal", []string{q, k})
	g.SetType(same, typ(ortgraph.Bool, d[0], "1", d[1], d[1]))
	pad := g.Op("Equal", []string{q, g.ScalarI64(0)})
	g.SetType(pad, typ(ortgraph.Bool, d[0], "1", d[1], "1"))
	keep := g.Op("Or", []string{same, pad})
	g.SetType(keep, typ(ortgraph.Bool, d[0], "1", d[1], d[1]))
	for _, m := range masks {
		readers := cons[m]
		nm := g.Op("And", []string{m, keep})
		g.SetType(nm, g.Type(m))
		for _, n := range readers {
			if maskFollow[n.OpType] {
				continue
			}
			for i, in := range n.Input {
				if in == m {
					n.Input[i] = nm
				}
			}
		}
	}
}

// rotaryPositions returns the RotaryEmbedding nodes, or the reason their positions cannot
// come from an input.
func rotaryPositions(g *ortgraph.Graph) ([]*onnxpb.NodeProto, string) {
	var out []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		if n.OpType != "RotaryEmbedding" || n.Domain != "" || len(n.Input) < 3 {
			continue
		}
		if len(n.Input) > 3 && n.Input[3] != "" {
			if n.Input[3] != PositionIDsInput {
				if why := fromRangeOnly(g, n.Input[3]); why != "" {
					return nil, fmt.Sprintf("RotaryEmbedding %q: its position ids %s", n.Name, why)
				}
			}
		} else {
			for _, c := range n.Input[1:3] {
				if d := elementwiseDims(g, c); len(d) != 3 || d[0] != "1" {
					return nil, fmt.Sprintf("RotaryEmbedding %q: cache %q is not [1, seq, d/2]", n.Name, c)
				}
				if why := fromRangeOnly(g, c); why != "" {
					return nil, fmt.Sprintf("RotaryEmbedding %q: cache %q %s", n.Name, c, why)
				}
			}
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, "no RotaryEmbedding node (the rotary embedding stayed decomposed), so positions cannot restart per document"
	}
	return out, ""
}

// elementwiseDims is v's dims, read through the unary elementwise ops above it when v has
// no recorded type (the opset-23 export leaves its cos/sin caches untyped).
func elementwiseDims(g *ortgraph.Graph, v string) []string {
	for {
		if d := g.SymDims(v); d != nil {
			return d
		}
		n := g.Producer(v)
		if n == nil || n.Domain != "" || !slices.Contains([]string{"Cos", "Sin", "Cast", "Identity"}, n.OpType) {
			return nil
		}
		v = n.Input[0]
	}
}

// fromRangeOnly says why v is not a function of Range(0, …) and shapes alone ("" when it
// is): then its rows are positions 0, 1, … whatever the inputs hold.
func fromRangeOnly(g *ortgraph.Graph, v string) string {
	seen := map[string]bool{}
	ranged := false
	var walk func(string) string
	walk = func(v string) string {
		if v == "" || seen[v] || g.Initializer(v) != nil {
			return ""
		}
		seen[v] = true
		n := g.Producer(v)
		switch {
		case n == nil:
			return fmt.Sprintf("depend on the values of input %q", v)
		case n.OpType == "Shape" || n.OpType == "Constant":
			return ""
		case n.OpType == "Range":
			if s, ok := g.ConstInts(n.Input[0]); !ok || len(s) != 1 || s[0] != 0 {
				return fmt.Sprintf("come from Range %q that does not start at a constant 0", n.Name)
			}
			ranged = true
		}
		for _, in := range n.Input {
			if why := walk(in); why != "" {
				return why
			}
		}
		return ""
	}
	if why := walk(v); why != "" {
		return why
	}
	if !ranged {
		return "are not computed from a Range of positions"
	}
	return ""
}

// rewriteRotaryPositions makes every RotaryEmbedding read position_ids, with its caches as
// [seq, d/2] tables (shared per cache), and adds the input when the graph lacks it.
func rewriteRotaryPositions(g *ortgraph.Graph, rot []*onnxpb.NodeProto) {
	if !slices.ContainsFunc(g.P.Input, func(vi *onnxpb.ValueInfoProto) bool { return vi.Name == PositionIDsInput }) {
		d := g.SymDims(AttentionMaskInput)
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: PositionIDsInput, Type: ortgraph.SymTensorType(ortgraph.Int64, d)})
		g.SetType(PositionIDsInput, ortgraph.SymTensorType(ortgraph.Int64, d))
	}
	tables := map[string]string{}
	for _, n := range rot {
		if len(n.Input) < 4 || n.Input[3] == "" {
			for i := 1; i <= 2; i++ {
				c := n.Input[i]
				t, ok := tables[c]
				if !ok {
					t = g.Add(ortgraph.NodeSpec{Op: "Squeeze", Inputs: []string{c, g.ConstI64(0)}, Name: "/model/rotary_emb/doc_mask_table"})[0]
					if et := g.ElemType(c); et != 0 {
						g.SetType(t, ortgraph.SymTensorType(et, elementwiseDims(g, c)[1:]))
					}
					tables[c] = t
				}
				n.Input[i] = t
			}
		}
		if len(n.Input) < 4 {
			n.Input = append(n.Input, PositionIDsInput)
		}
		n.Input[3] = PositionIDsInput
	}
}
