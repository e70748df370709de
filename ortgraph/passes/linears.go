package passes

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Linear is one nn.Linear of the decoder as it appears in the graph.
type Linear struct {
	Layer int    // decoder layer index; -1 for lm_head
	Kind  string // q_proj … down_proj, lm_head
	Node  *onnxpb.NodeProto
	// Weight is the initializer holding the weight; In/Out its Linear shape.
	Weight  string
	In, Out int64
	// WeightIsOutIn is true when the initializer is stored [out, in] (read through a
	// Transpose node, TorchScript style) instead of the exporter's pre-transposed [in, out].
	WeightIsOutIn bool
	// Prequantized marks a Linear the source graph already holds as 4-bit
	// com.microsoft.MatMulNBits or MatMulBnb4 (e.g. `ortq synth --quantize`); Weight is then
	// its packed B.
	Prequantized bool
	// Source says how the module path was found: metadata, name, or structure.
	Source string
}

// Module is the Hugging Face module path, e.g. model.layers.0.self_attn.q_proj.
func (l *Linear) Module() string {
	switch l.Kind {
	case "lm_head":
		return "lm_head"
	case "q_proj", "k_proj", "v_proj", "o_proj":
		return fmt.Sprintf("model.layers.%d.self_attn.%s", l.Layer, l.Kind)
	}
	return fmt.Sprintf("model.layers.%d.mlp.%s", l.Layer, l.Kind)
}

// Linears is the result of FindLinears.
type Linears struct {
	All    []*Linear // decoder Linears in (layer, kind) order, then lm_head if found
	Layers int
	Hidden int64
}

// Get returns the Linear of a layer and kind, or nil.
func (ls *Linears) Get(layer int, kind string) *Linear {
	for _, l := range ls.All {
		if l.Layer == layer && l.Kind == kind {
			return l
		}
	}
	return nil
}

// FindLinears locates the Linear layers. Module paths come, in order of preference, from
// the exporter's node metadata (pkg.torch.onnx.name_scopes / fx_node), from node or
// initializer names (TorchScript and optimum exports), and otherwise from the graph's
// structure: a Llama layer's seven Linears are told apart by what their outputs feed
// (attention scores, attention values, SiLU gate) and by their shapes.
//
// A graph whose loss prepare chunked (--loss-chunks) multiplies by lm_head's weight once
// per block of the sequence: several lm_head MatMuls of one weight are that one Linear,
// and the first stands for all.
//
// FindLinears only reads the graph, so --list-targets and the callers that want the
// Linears of a graph change nothing by running it; rewrites a graph needs before it can
// run (ORTCompat) are passes of their own in the caller's list.
var FindLinears = &ortgraph.Pass{
	Name:       "find-linears",
	Doc:        "locate the decoder's Linear layers (MatMul with a 2-D weight initializer) and name them by HF module path",
	ResultType: reflect.TypeFor[*Linears](),
	Run:        runFindLinears,
}

var (
	reLayerKind = regexp.MustCompile(`layers[._/](\d+)[._/](?:self_attn|mlp)[._/](q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)`)
	reLMHead    = regexp.MustCompile(`(^|[^a-z_])lm_head([^a-z_]|$)`)
)

// candidate is a MatMul that multiplies by a constant 2-D weight.
type candidate struct {
	node      *onnxpb.NodeProto
	weight    string
	in, out   int64
	outIn     bool
	prequant  bool
	layer     int
	kind      string
	source    string
	transpose *onnxpb.NodeProto
}

func linearCandidates(g *ortgraph.Graph) []*candidate {
	var cs []*candidate
	for _, n := range g.P.Node {
		if n.OpType == "MatMulNBits" && n.Domain == "com.microsoft" && len(n.Input) >= 3 && g.Initializer(n.Input[1]) != nil {
			// Already 4-bit: K and N are the Linear's in and out.
			k, n2 := ortgraph.AttrInt(n, "K", 0), ortgraph.AttrInt(n, "N", 0)
			if k > 0 && n2 > 0 {
				cs = append(cs, &candidate{node: n, layer: -1, weight: n.Input[1], in: k, out: n2, prequant: true})
			}
			continue
		}
		if n.OpType == "MatMulBnb4" && n.Domain == "com.microsoft" && len(n.Input) >= 3 && g.Initializer(n.Input[1]) != nil {
			if k, n2 := ortgraph.AttrInt(n, "K", 0), ortgraph.AttrInt(n, "N", 0); k > 0 && n2 > 0 {
				cs = append(cs, &candidate{node: n, layer: -1, weight: n.Input[1], in: k, out: n2, prequant: true})
			}
			continue
		}
		if n.OpType != "MatMul" || n.Domain != "" || len(n.Input) != 2 {
			continue
		}
		w := n.Input[1]
		c := &candidate{node: n, layer: -1}
		if t := g.Initializer(w); t != nil && len(t.Dims) == 2 {
			c.weight, c.in, c.out = w, t.Dims[0], t.Dims[1]
		} else if p := g.Producer(w); p != nil && p.OpType == "Transpose" && len(p.Input) == 1 {
			t := g.Initializer(p.Input[0])
			perm, _ := ortgraph.AttrInts(p, "perm")
			if t == nil || len(t.Dims) != 2 || (perm != nil && !(len(perm) == 2 && perm[0] == 1 && perm[1] == 0)) {
				continue
			}
			c.weight, c.in, c.out, c.outIn, c.transpose = p.Input[0], t.Dims[1], t.Dims[0], true, p
		} else {
			continue
		}
		cs = append(cs, c)
	}
	return cs
}

// labelByNames fills layer/kind from metadata and names.
func labelByNames(g *ortgraph.Graph, c *candidate) {
	texts := []struct{ s, src string }{
		{lastScope(ortgraph.MetaValue(c.node, "pkg.torch.onnx.name_scopes")), "metadata"},
		{ortgraph.MetaValue(c.node, "pkg.torch.onnx.fx_node"), "metadata"},
		{c.weight, "name"},
		{c.node.Name, "name"},
	}
	for _, t := range texts {
		if t.s == "" {
			continue
		}
		if m := reLayerKind.FindStringSubmatch(t.s); m != nil {
			c.layer, _ = strconv.Atoi(m[1])
			c.kind, c.source = m[2], t.src
			return
		}
		if reLMHead.MatchString(t.s) {
			c.kind, c.source = "lm_head", t.src
			return
		}
	}
}

// lastScope returns the innermost module of a name_scopes list such as
// "[”, 'm', 'm.model', 'm.model.layers.0', 'm.model.layers.0.self_attn.q_proj']".
func lastScope(s string) string {
	s = strings.Trim(s, "[] ")
	if s == "" {
		return ""
	}
	parts := strings.Split(s, ",")
	return strings.Trim(parts[len(parts)-1], " '\"")
}

func runFindLinears(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	cs := linearCandidates(g)
	if len(cs) == 0 {
		return nil, fmt.Errorf("no Linear layers found (no MatMul with a 2-D weight initializer): is this a Llama decoder graph?")
	}
	named := 0
	for _, c := range cs {
		labelByNames(g, c)
		if c.kind != "" {
			named++
		}
	}
	if named < len(cs) {
		if err := labelByStructure(g, cs); err != nil {
			return nil, err
		}
	}
	res := &Linears{}
	seen := map[string]*candidate{}
	for _, c := range cs {
		if c.kind == "" {
			return nil, fmt.Errorf("node %q: MatMul with weight %q [%d×%d] could not be identified as a Llama Linear", c.node.Name, c.weight, c.in, c.out)
		}
		key := fmt.Sprintf("%d/%s", c.layer, c.kind)
		if prev := seen[key]; prev != nil {
			if c.kind == "lm_head" && c.weight == prev.weight {
				continue // another block of a chunked lm_head
			}
			return nil, fmt.Errorf("nodes %q and %q both look like layer %d %s", prev.node.Name, c.node.Name, c.layer, c.kind)
		}
		seen[key] = c
		res.All = append(res.All, &Linear{Layer: c.layer, Kind: c.kind, Node: c.node, Weight: c.weight, In: c.in, Out: c.out, WeightIsOutIn: c.outIn,
			Prequantized: c.prequant, Source: c.source})
		if c.layer+1 > res.Layers {
			res.Layers = c.layer + 1
		}
	}
	order := map[string]int{"lm_head": 99}
	for i, k := range Kinds {
		order[k] = i
	}
	sort.Slice(res.All, func(i, j int) bool {
		a, b := res.All[i], res.All[j]
		if (a.Layer < 0) != (b.Layer < 0) {
			return b.Layer < 0
		}
		if a.Layer != b.Layer {
			return a.Layer < b.Layer
		}
		return order[a.Kind] < order[b.Kind]
	})
	// Every layer must have all seven Linears: anything else is not a Llama decoder.
	for l := 0; l < res.Layers; l++ {
		for _, k := range Kinds {
			if res.Get(l, k) == nil {
				return nil, fmt.Errorf("layer %d has no %s: not a Llama decoder graph (found %d Linears)", l, k, len(res.All))
			}
		}
	}
	if q := res.Get(0, "q_proj"); q != nil {
		res.Hidden = q.In
	}
	ctx.Logf("find-linears: %d layers, %d Linears", res.Layers, len(res.All))
	return res, nil
}

// labelByStructure names the Linears of graphs without usable names. Per layer, the
// q/k/v Linears share their input; v's output reaches the MatMul that multiplies the
// attention probabilities (a Softmax result), q's and k's reach the score MatMul as its
// first and second operand; o reads the attention output; gate feeds a Sigmoid (SiLU) and
// shares its input with up; down reads the product of the two. Layers are numbered in
// graph order of their q Linear; a Linear after the last layer whose output dimension
// differs from the hidden size is lm_head.
func labelByStructure(g *ortgraph.Graph, cs []*candidate) error {
	if err := g.TopoSort(); err != nil {
		return err
	}
	st := &structure{g: g, cons: g.Consumers(), byNode: map[*onnxpb.NodeProto]*candidate{}}
	for _, c := range cs {
		st.byNode[c.node] = c
	}
	st.labelByReach()
	st.labelRest(cs)
	return nil
}

// structure is what labelByStructure reads: the graph, its consumers and the candidates.
type structure struct {
	g      *ortgraph.Graph
	cons   map[string][]*onnxpb.NodeProto
	byNode map[*onnxpb.NodeProto]*candidate
}

// hit is a MatMul, Softmax, Sigmoid or Attention node an output reaches, at input port.
type hit struct {
	node *onnxpb.NodeProto
	port int
}

// reach follows an output through shape/elementwise ops to the first MatMul, Softmax,
// Sigmoid or Attention and reports which it met and at which input.
func (st *structure) reach(v string, depth int, seen map[string]bool) []hit {
	if depth > 40 || seen[v] {
		return nil
	}
	seen[v] = true
	var out []hit
	for _, n := range st.cons[v] {
		switch n.OpType {
		case "MatMul", "Sigmoid", "Softmax", "Attention":
			for i, in := range n.Input {
				if in == v {
					out = append(out, hit{n, i})
				}
			}
			continue
		}
		if st.byNode[n] != nil {
			continue
		}
		for _, o := range n.Output {
			out = append(out, st.reach(o, depth+1, seen)...)
		}
	}
	return out
}

// kindByReach names a Linear by what its output reaches: q/k/v (the score and value
// MatMuls, or Attention's ports), gate (a Sigmoid); "" for the others.
func (st *structure) kindByReach(c *candidate) string {
	for _, h := range st.reach(c.node.Output[0], 0, map[string]bool{}) {
		switch {
		case h.node.OpType == "Attention":
			return []string{"q_proj", "k_proj", "v_proj"}[min(h.port, 2)]
		case h.node.OpType == "Sigmoid":
			return "gate_proj"
		case h.node.OpType == "MatMul" && st.byNode[h.node] == nil:
			other := h.node.Input[1-h.port]
			if fromSoftmax(st.g, other) {
				return "v_proj"
			} else if h.port == 0 {
				return "q_proj"
			}
			return "k_proj"
		}
	}
	return ""
}

// labelByReach is the first sweep: q/k/v and gate in graph order, q/k/v grouped into
// layers by their shared input, gate in the layer of the q/k/v before it.
func (st *structure) labelByReach() {
	layer := -1
	inputLayer := map[string]int{}
	for _, n := range st.g.P.Node {
		c := st.byNode[n]
		if c == nil || c.kind != "" {
			continue
		}
		x := c.node.Input[0]
		kind := st.kindByReach(c)
		if kind == "" {
			// o_proj, up_proj, down_proj, lm_head: decided by inputs and shapes below.
			continue
		}
		if kind == "q_proj" || kind == "k_proj" || kind == "v_proj" {
			if l, ok := inputLayer[x]; ok {
				c.layer = l
			} else {
				layer++
				inputLayer[x] = layer
				c.layer = layer
			}
		} else {
			c.layer = layer
		}
		c.kind, c.source = kind, "structure"
	}
}

// labelRest is the second sweep: the remaining Linears in graph order. up shares gate's
// input; o is the first square Linear of a layer after its q/k/v; down follows with
// out = hidden; anything else is lm_head.
func (st *structure) labelRest(cs []*candidate) {
	gateIn := map[string]int{}
	hidden := int64(-1)
	for _, c := range cs {
		if c.kind == "gate_proj" {
			gateIn[c.node.Input[0]] = c.layer
		}
		if c.kind == "q_proj" {
			hidden = c.in
		}
	}
	layer := -1
	for _, n := range st.g.P.Node {
		c := st.byNode[n]
		if c == nil {
			continue
		}
		if c.kind != "" {
			if c.layer >= 0 {
				layer = c.layer
			}
			continue
		}
		if l, ok := gateIn[c.node.Input[0]]; ok {
			c.layer, c.kind = l, "up_proj"
		} else if layer >= 0 && c.out == hidden && !hasKind(cs, layer, "o_proj") {
			c.layer, c.kind = layer, "o_proj"
		} else if layer >= 0 && c.out == hidden && !hasKind(cs, layer, "down_proj") && hasKind(cs, layer, "o_proj") {
			c.layer, c.kind = layer, "down_proj"
		} else {
			c.layer, c.kind = -1, "lm_head"
		}
		c.source = "structure"
	}
}

func hasKind(cs []*candidate, layer int, kind string) bool {
	for _, c := range cs {
		if c.layer == layer && c.kind == kind {
			return true
		}
	}
	return false
}

// fromSoftmax reports whether v is computed from a Softmax through elementwise ops.
func fromSoftmax(g *ortgraph.Graph, v string) bool {
	for depth := 0; depth < 6; depth++ {
		p := g.Producer(v)
		if p == nil {
			return false
		}
		if p.OpType == "Softmax" {
			return true
		}
		if len(p.Input) == 0 {
			return false
		}
		// Follow the data input (Where's is input 1 or 2: the one that is not a condition).
		next := p.Input[0]
		if p.OpType == "Where" {
			next = p.Input[2]
			if q := g.Producer(p.Input[1]); q != nil && q.OpType == "Softmax" {
				return true
			}
		}
		v = next
	}
	return false
}
