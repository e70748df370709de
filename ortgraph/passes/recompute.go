package passes

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// RecomputeResult says what the Recompute pass did.
type RecomputeResult struct {
	Layers int // layers whose activations are recomputed
	Kept   int // Linear products kept from the forward pass (RecomputeOptions.KeepProducts)
	Cloned int // forward nodes re-emitted for the backward pass
	Reused int // backward dequantizations of 4-bit weights replaced by the recomputed forward's
}

// Recompute makes the backward pass of each decoder layer recompute that layer's
// activations from its input instead of keeping them alive from the forward pass
// (gradient checkpointing per layer). Only the layer inputs — the residual stream between
// layers — and the values computed from LoRA parameters alone (the factors cast, transposed
// and scaled, as small as the parameters: paramValues) survive the forward pass. LoRA
// dropout masks are a deterministic hash of the seed input (dropout.go), so they are
// recomputed like any other activation, unless RecomputeOptions.KeepMasks keeps them.
//
// Pattern: forward nodes tagged with a layer (node name or the exporter's name_scopes
// metadata contain "layers.N"); backward nodes reading values produced inside layer N.
// Rewrite: those reads go to clones of the producing forward nodes. Two measures keep ONNX
// Runtime from undoing it: every clone that reads no other clone reads its smallest
// floating-point input (a norm's weight, a weight's scales) through Where(isnan(dy[0]), x,
// x), where dy is the gradient of the layer's output, and every other clone reads a clone,
// so none can run before the backward pass reaches the layer (no early hoisting); and since
// their inputs differ from the forward nodes' inputs, common-subexpression elimination
// cannot merge them back. Values from outside the layer (its input, shared values) are read
// as they are: they are alive anyway, and a gate on them would copy them.
// Random draws in the source graph are not re-drawn: a Dropout node's clone reuses the
// forward mask (x·mask/(1−p)), and values computed only from random ops keep their forward
// values, so forward and backward see the same draw.
//
// 4-bit weights: a recomputed 4-bit Linear dequantizes its weight again (a clone of the
// forward DequantizeLinear → Reshape chain, gated like every clone), and the backward pass's
// dx = dy·W has its own gated chain over the same bytes (autodiff's redequantize). Both run
// while the backward pass is inside the layer, so dx reads the recomputed W (the chain's
// Reshape output, not the DequantizeLinear's) instead: one dequantization fewer per
// recomputed Linear (see reuseRecomputedWeights).
//
// Phases: tagLayers (with dropStrayTags), layerBoundaries, layerGates and randomValues
// analyse the forward graph (newRecomputer); rewireBackward emits the clones; then
// reuseRecomputedWeights, a topological sort and Prune.
var Recompute = &ortgraph.Pass{
	Name:        "recompute",
	Doc:         "per-layer activation recomputation in the backward pass (gradient checkpointing)",
	Requires:    []*ortgraph.Pass{Backward, LoRA, FindLinears},
	OptionsType: reflect.TypeFor[RecomputeOptions](),
	ResultType:  reflect.TypeFor[*RecomputeResult](),
	Run:         runRecompute,
}

var reLayer = regexp.MustCompile(`layers[./_](\d+)[./_'\]]`)

// nodeLayer returns the decoder layer a forward node belongs to, or -1.
//
// Stock torch.onnx dynamo exports list the node's module path in the
// pkg.torch.onnx.name_scopes metadata, outermost first, and end it with the node's own fx
// name (…, 'm.model', 'm.model.layers.0', 'm.model.layers.0.input_layernorm', 'mul_111'):
// the layer is read from the innermost entry that names one, not from the last entry. The
// namespace key ("m.model.layers.0: LlamaDecoderLayer/…/mul_111: aten.mul.Tensor") is the
// fallback, then the node name (ortq's synth and import graphs and the nodes ortq's passes
// add are named /model/layers.N/…).
func nodeLayer(n *onnxpb.NodeProto) int {
	if l := scopeLayer(scopeEntries(ortgraph.MetaValue(n, "pkg.torch.onnx.name_scopes"))); l >= 0 {
		return l
	}
	if l := scopeLayer(namespaceEntries(ortgraph.MetaValue(n, "namespace"))); l >= 0 {
		return l
	}
	if m := reLayer.FindStringSubmatch(n.Name + "/"); m != nil {
		l, _ := strconv.Atoi(m[1])
		return l
	}
	return -1
}

// copyScope gives node to the exporter's module-scope metadata of from (the keys nodeLayer
// reads, copied by value), so that Recompute puts to in from's layer.
func copyScope(to, from *onnxpb.NodeProto) {
	for _, kv := range from.MetadataProps {
		if kv.Key == "pkg.torch.onnx.name_scopes" || kv.Key == "namespace" {
			to.MetadataProps = append(to.MetadataProps, &onnxpb.StringStringEntryProto{Key: kv.Key, Value: kv.Value})
		}
	}
}

// scopeLayer returns the layer named by the innermost (last) entry that names one, or -1.
func scopeLayer(entries []string) int {
	for i := len(entries) - 1; i >= 0; i-- {
		if m := reLayer.FindStringSubmatch(entries[i] + "."); m != nil {
			l, _ := strconv.Atoi(m[1])
			return l
		}
	}
	return -1
}

// scopeEntries splits a name_scopes value ("[…, 'm.model.layers.0', 'mul_111']").
func scopeEntries(s string) []string {
	s = strings.Trim(s, "[] ")
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.Trim(p, " '\"")
	}
	return parts
}

// namespaceEntries returns the module paths of a namespace value
// ("m.model.layers.0: transformers…LlamaDecoderLayer/mul_111: aten.mul.Tensor").
func namespaceEntries(s string) []string {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, "/")
	for i, p := range parts {
		if j := strings.Index(p, ":"); j >= 0 {
			p = p[:j]
		}
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

func runRecompute(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	br := ortgraph.ResultOf[*BackwardResult](ctx, Backward)
	r := newRecomputer(g, br, ortgraph.ResultOf[[]manifest.LoRAParam](ctx, LoRA))
	pol := ortgraph.OptionsOf[RecomputeOptions](ctx)
	ls := ortgraph.ResultOf[*Linears](ctx, FindLinears)
	if pol.KeepLayers < 0 || pol.KeepLayers >= ls.Layers {
		return nil, fmt.Errorf("recompute policy keeps %d of %d layers: keep 0 to %d (keeping every layer is no recomputation: use the training graph)",
			pol.KeepLayers, ls.Layers, ls.Layers-1)
	}
	r.below = ls.Layers - pol.KeepLayers
	if pol.KeepProducts || len(pol.KeepKinds) > 0 {
		r.keep = keptProducts(g, ls, pol.KeepProducts, pol.KeepKinds)
	}
	r.keepMasks = pol.KeepMasks
	layers, err := r.rewireBackward()
	if err != nil {
		return nil, err
	}
	if len(layers) == 0 {
		return nil, fmt.Errorf("no decoder layer found to recompute (nodes carry no layers.N scope)")
	}
	reused := reuseRecomputedWeights(g, r.fwd, br.Forward, r.clones)
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	g.Prune()
	ctx.Logf("recompute: %d layers, %d forward nodes re-emitted for the backward pass, %d Linear products kept, %d backward weight dequantizations replaced "+
		"by the recomputed ones",
		len(layers), r.cloned, r.kept, reused)
	return &RecomputeResult{Layers: len(layers), Kept: r.kept, Cloned: r.cloned, Reused: reused}, nil
}

// keptProducts returns the values KeepProducts (all) or KeepKinds (kinds) keeps: each such
// Linear's output, or the LoRA sum that replaced it in its readers (the LoRA pass's Add,
// which is then the value the layer reads; its own inputs are needed by no gradient).
func keptProducts(g *ortgraph.Graph, ls *Linears, all bool, kinds []string) map[string]bool {
	keep := map[string]bool{}
	readers := g.Consumers()
	for _, l := range ls.All {
		if l.Layer < 0 || l.Node == nil || !all && !slices.Contains(kinds, l.Kind) {
			continue
		}
		y := l.Node.Output[0]
		if rs := readers[y]; len(rs) == 1 && rs[0].OpType == "Add" && strings.HasPrefix(rs[0].Name, "lora/") {
			y = rs[0].Output[0]
		}
		keep[y] = true
	}
	return keep
}

// recomputer holds what the Recompute pass learns about the forward graph (phases 1-4 in
// newRecomputer) and the clones it emits while rewiring the backward pass.
type recomputer struct {
	g     *ortgraph.Graph
	isFwd map[*onnxpb.NodeProto]bool // the nodes before the backward pass (BackwardResult.Forward)
	fwd   []*onnxpb.NodeProto        // those nodes in graph (topological) order
	// layerOf maps a forward value to the layer of its producer (-1: shared).
	layerOf map[string]int
	// boundary holds the checkpoints: values of a layer read outside it, graph outputs.
	boundary map[string]bool
	// dep[L] is the gradient that gates layer L's recomputation (layerGates).
	dep map[int]string
	// paramGrads[L] are the gradients of the parameters read only by layer L (paramLayers).
	paramGrads map[int][]string
	// producer maps a forward value to its node; random marks values drawn at random.
	producer map[string]*onnxpb.NodeProto
	random   map[string]bool
	// fromParams marks values computed from LoRA parameters and constants alone (paramValues).
	fromParams map[string]bool

	// below is the first layer not recomputed (RecomputeOptions.KeepLayers counts down from
	// the top); keep holds the Linear products read from the forward pass (KeepProducts).
	below     int
	keep      map[string]bool
	kept      int
	keepMasks bool // RecomputeOptions.KeepMasks

	clones map[string]string // forward value → its recomputed clone
	cond   map[int]string    // layer → its gate condition
	cloned int
}

// newRecomputer runs the analysis phases: layer tags, layer boundaries, the gradient
// each layer's recomputation waits for, and the random values that are never recomputed.
func newRecomputer(g *ortgraph.Graph, br *BackwardResult, params []manifest.LoRAParam) *recomputer {
	r := &recomputer{g: g, isFwd: br.Forward, clones: map[string]string{}, cond: map[int]string{}}
	for _, n := range g.P.Node {
		if br.Forward[n] {
			r.fwd = append(r.fwd, n)
		}
	}
	var outputs []string
	for _, o := range g.P.Output {
		outputs = append(outputs, o.Name)
	}
	var nl map[*onnxpb.NodeProto]int
	nl, r.layerOf = tagLayers(r.fwd)
	r.boundary = layerBoundaries(r.fwd, nl, r.layerOf, outputs)
	r.dep = layerGates(r.fwd, r.layerOf, r.boundary, br.ValueGrads)
	r.paramGrads = paramLayers(r.fwd, r.layerOf, params)
	r.producer, r.random = randomValues(g, r.fwd)
	r.fromParams = paramValues(g, r.fwd, params)
	return r
}

// paramValues returns the forward values computed from LoRA parameters and constants alone
// (a parameter cast to the activation type, transposed, scaled): they are the same in the
// backward pass, and as small as the parameters, so the backward pass reads the forward
// pass's values instead of recomputing them (ten kernels fewer per layer with LoRA on q and v).
func paramValues(g *ortgraph.Graph, fwd []*onnxpb.NodeProto, params []manifest.LoRAParam) map[string]bool {
	isParam := map[string]bool{}
	for _, p := range params {
		isParam[p.Name] = true
	}
	constant := map[string]bool{} // computed from initializers alone
	out := map[string]bool{}
	for _, n := range fwd {
		fromParam, ok := false, true
		for _, in := range n.Input {
			switch {
			case in == "" || constant[in] || g.Initializer(in) != nil:
			case isParam[in] || out[in]:
				fromParam = true
			default:
				ok = false
			}
		}
		for _, o := range n.Output {
			switch {
			case ok && fromParam:
				out[o] = true
			case ok:
				constant[o] = true
			}
		}
	}
	return out
}

// tagLayers assigns each forward node its decoder layer (nodeLayer) and returns the node
// tags and the layer of every forward value (-1: shared, e.g. embedding, final norm, head).
// Untagged nodes (exporter decompositions without a scope) join the layer their inputs come
// from, when that is a single layer; such a propagated tag sticks only if the node feeds an
// explicitly tagged node of the same layer, so nodes after the last layer stay shared.
func tagLayers(fwd []*onnxpb.NodeProto) (map[*onnxpb.NodeProto]int, map[string]int) {
	layerOf := map[string]int{}
	nl := map[*onnxpb.NodeProto]int{}
	for _, n := range fwd {
		l := nodeLayer(n)
		if l < 0 {
			seen := -1
			for _, in := range ortgraph.NodeInputs(n) {
				if il, ok := layerOf[in]; ok && il >= 0 {
					if seen >= 0 && seen != il {
						seen = -2
						break
					}
					seen = il
				}
			}
			if seen >= 0 {
				l = seen
			}
		}
		nl[n] = l
		for _, o := range n.Output {
			layerOf[o] = l
		}
	}
	dropStrayTags(fwd, nl, layerOf)
	return nl, layerOf
}

// dropStrayTags clears the propagated tags of nodes that feed no explicitly tagged node of
// their layer (walking backwards, so a chain of untagged nodes keeps its tag as a whole).
func dropStrayTags(fwd []*onnxpb.NodeProto, nl map[*onnxpb.NodeProto]int, layerOf map[string]int) {
	keep := map[*onnxpb.NodeProto]bool{}
	cons := map[string][]*onnxpb.NodeProto{}
	for _, n := range fwd {
		for _, in := range ortgraph.NodeInputs(n) {
			cons[in] = append(cons[in], n)
		}
	}
	for i := len(fwd) - 1; i >= 0; i-- {
		n := fwd[i]
		if nl[n] < 0 {
			continue
		}
		if nodeLayer(n) >= 0 {
			keep[n] = true
			continue
		}
		for _, o := range n.Output {
			for _, c := range cons[o] {
				if nl[c] == nl[n] && keep[c] {
					keep[n] = true
				}
			}
		}
		if !keep[n] {
			nl[n] = -1
			for _, o := range n.Output {
				layerOf[o] = -1
			}
		}
	}
}

// layerBoundaries returns the checkpoints: values of layer L read by forward nodes outside
// L (the residual stream) and the graph outputs stay alive instead of being recomputed.
func layerBoundaries(fwd []*onnxpb.NodeProto, nl map[*onnxpb.NodeProto]int, layerOf map[string]int, outputs []string) map[string]bool {
	boundary := map[string]bool{}
	for _, n := range fwd {
		ln := nl[n]
		for _, in := range ortgraph.NodeInputs(n) {
			if l, ok := layerOf[in]; ok && l >= 0 && l != ln {
				boundary[in] = true
			}
		}
	}
	for _, o := range outputs {
		boundary[o] = true
	}
	return boundary
}

// layerGates returns dep[L]: a gradient that exists only once the backward pass has reached
// layer L: the gradient of the layer's last boundary value in forward order (its output).
// Every backward node of the layer runs after it, so gating on it cannot form a cycle.
func layerGates(fwd []*onnxpb.NodeProto, layerOf map[string]int, boundary map[string]bool, valueGrads map[string]string) map[int]string {
	dep := map[int]string{}
	depAt := map[int]int{}
	for i, n := range fwd {
		for _, o := range n.Output {
			l, ok := layerOf[o]
			if !ok || l < 0 || !boundary[o] || valueGrads[o] == "" {
				continue
			}
			if at, seen := depAt[l]; !seen || i > at {
				dep[l], depAt[l] = valueGrads[o], i
			}
		}
	}
	return dep
}

// paramLayers groups the parameters' gradients (the backward pass's fp32 outputs,
// GradName) by the one layer whose forward nodes read the parameter; parameters read by
// several layers or by shared nodes are left out.
func paramLayers(fwd []*onnxpb.NodeProto, layerOf map[string]int, params []manifest.LoRAParam) map[int][]string {
	layer := map[string]int{}
	for _, n := range fwd {
		for _, in := range n.Input {
			l := -1
			if len(n.Output) > 0 {
				if ol, ok := layerOf[n.Output[0]]; ok {
					l = ol
				}
			}
			if prev, seen := layer[in]; seen && prev != l {
				l = -1
			}
			layer[in] = l
		}
	}
	out := map[int][]string{}
	for _, p := range params {
		if l, ok := layer[p.Name]; ok && l >= 0 {
			out[l] = append(out[l], GradName(p.Name))
		}
	}
	return out
}

// randomValues returns the producer of every forward value and the values that are random
// draws (dropout masks) or computed only from them and constants: those must not be
// recomputed, since a second draw would differ from the forward pass's.
func randomValues(g *ortgraph.Graph, fwd []*onnxpb.NodeProto) (map[string]*onnxpb.NodeProto, map[string]bool) {
	producer := map[string]*onnxpb.NodeProto{}
	random := map[string]bool{}
	for _, n := range fwd {
		for _, o := range n.Output {
			producer[o] = n
		}
		isRandom := false
		switch n.OpType {
		case "RandomUniformLike", "RandomNormalLike", "RandomUniform", "RandomNormal", "Bernoulli", "Multinomial":
			isRandom = true
		default:
			fromRandom, other := false, false
			for _, in := range n.Input {
				switch {
				case random[in]:
					fromRandom = true
				case in != "" && g.Initializer(in) == nil && producer[in] != nil && producer[in].OpType != "Constant":
					other = true
				}
			}
			isRandom = fromRandom && !other
		}
		if isRandom {
			for _, o := range n.Output {
				random[o] = true
			}
		}
	}
	return producer, random
}

// rewireBackward points every backward read of a value computed inside a layer (not a
// checkpoint) at its recomputed clone, and returns the layers it recomputes.
func (r *recomputer) rewireBackward() (map[int]bool, error) {
	layers := map[int]bool{}
	for _, n := range append([]*onnxpb.NodeProto(nil), r.g.P.Node...) {
		if r.isFwd[n] || len(n.Name) >= 10 && n.Name[:10] == "recompute/" {
			continue
		}
		for i, in := range n.Input {
			l, ok := r.layerOf[in]
			if !ok || l < 0 || l >= r.below || r.boundary[in] {
				continue
			}
			c, err := r.clone(in, l)
			if err != nil {
				return nil, err
			}
			n.Input[i] = c
			layers[l] = true
		}
	}
	return layers, nil
}

// gateCond is a one-element test on the layer's output gradient — and on the parameter
// gradients of the nearest layer above that has parameters: false unless one is NaN, and
// both branches of the Where it feeds are the same value anyway. It only adds data
// dependencies: recomputation cannot run early, and the layer above has finished its
// parameter gradients before this layer's recomputation starts.
//
// Why the second: ONNX Runtime orders nodes by a depth-first walk back from the graph's
// outputs, which puts a parameter gradient (x·dy products whose result is only read by the
// final outputs) after everything else: every layer's LoRA input and output gradient then
// stays alive through the whole backward pass (≈1.9 GB on the Llama-3.2-3B shape at
// micro-batch 7, read from ONNX Runtime's profile of the step on an H200).
func (r *recomputer) gateCond(l int) string {
	if r.cond[l] == "" {
		g := r.g
		cond := g.Op("IsNaN", []string{firstOf(g, r.dep[l])})
		if grads := r.gradsAbove(l); len(grads) > 0 {
			firsts := make([]string, len(grads))
			for i, gv := range grads {
				firsts[i] = firstOf(g, gv)
			}
			sum := firsts[0]
			if len(firsts) > 1 {
				sum = g.Op("Sum", firsts)
			}
			cond = g.Op("Or", []string{cond, g.Op("IsNaN", []string{sum})})
		}
		r.cond[l] = cond
	}
	return r.cond[l]
}

// gradsAbove returns the parameter gradients of the nearest layer above l that has any.
func (r *recomputer) gradsAbove(l int) []string {
	top := -1
	for L := range r.paramGrads {
		top = max(top, L)
	}
	for L := l + 1; L <= top; L++ {
		if gs := r.paramGrads[L]; len(gs) > 0 {
			return gs
		}
	}
	return nil
}

// waitFor is v read through Where(isnan(dep[0]), v, v): the same value, which ONNX Runtime
// can only compute once dep exists (a data dependency; ONNX has no control edges).
func waitFor(g *ortgraph.Graph, dep, v string) string {
	return g.Op("Where", []string{g.Op("IsNaN", []string{firstOf(g, dep)}), v, v})
}

// firstOf is v's first element, [1].
func firstOf(g *ortgraph.Graph, v string) string {
	return g.Op("Slice", []string{g.Op("Reshape", []string{v, g.ConstI64(-1)}), g.ConstI64(0), g.ConstI64(1)})
}

// clone returns the value to read in place of forward value v in layer l's backward pass:
// v itself (random draws, parameters and values computed from them alone, constants, shared
// values, the layer input), or a clone of v's producer, recursively.
func (r *recomputer) clone(v string, l int) (string, error) {
	if c, ok := r.clones[v]; ok {
		return c, nil
	}
	p := r.producer[v]
	if r.random[v] {
		return v, nil // the forward pass's mask stays alive
	}
	if r.fromParams[v] {
		return v, nil // the forward pass's value stays alive
	}
	if r.keepMasks && p != nil && ortgraph.MetaValue(p, DropoutMaskKey) != "" {
		r.clones[v] = v // the forward mask stays alive
		return v, nil
	}
	if r.keep[v] {
		r.clones[v] = v // the forward product stays alive
		r.kept++
		return v, nil
	}
	if p == nil || r.layerOf[v] != l || r.boundary[v] {
		return r.outside(v), nil
	}
	if p.OpType == "Dropout" && p.Domain == "" {
		return r.cloneDropout(v, p, l)
	}
	return r.cloneNode(v, p, l)
}

// outside handles a value from outside the layer — the layer input, a shared value, a
// parameter or a constant — by reading it as it is: it was computed in the forward pass
// and stays alive, so reading it costs nothing. What makes the recomputation wait for the
// backward pass is the gate cloneNode gives every clone that reads no recomputed value
// (gateConstantInputs): through one of its small inputs, not a copy of the layer input.
func (r *recomputer) outside(v string) string {
	return v
}

// cloneDropout recomputes a Dropout's output from the forward mask: y = x·mask/(1−p).
func (r *recomputer) cloneDropout(v string, p *onnxpb.NodeProto, l int) (string, error) {
	g := r.g
	if v != p.Output[0] {
		return v, nil // the mask itself stays alive
	}
	if len(p.Output) < 2 || p.Output[1] == "" {
		return "", fmt.Errorf("dropout node %q has no mask output to reuse", p.Name)
	}
	x, err := r.clone(p.Input[0], l)
	if err != nil {
		return "", err
	}
	ratio := p.Input[1]
	if rt, xt := g.ElemType(ratio), g.ElemType(x); rt != 0 && xt != 0 && rt != xt {
		ratio = g.Op("Cast", []string{ratio}, ortgraph.AInt("to", int64(xt)))
	}
	one := g.ConstLikeF(1, x)
	scale := g.Op("Div", []string{one, g.Op("Sub", []string{one, ratio})})
	y := g.Op("Where", []string{p.Output[1], g.Op("Mul", []string{x, scale}), g.ConstLikeF(0, x)})
	if t := g.Type(v); t != nil {
		g.SetType(y, t)
	}
	r.clones[v] = y
	r.cloned++
	return y, nil
}

// cloneNode re-emits v's producer p on cloned inputs ("recompute/<name>").
func (r *recomputer) cloneNode(v string, p *onnxpb.NodeProto, l int) (string, error) {
	g := r.g
	ins := make([]string, len(p.Input))
	dependent := false
	for i, in := range p.Input {
		if in == "" {
			continue
		}
		c, err := r.clone(in, l)
		if err != nil {
			return "", err
		}
		ins[i] = c
		dependent = dependent || c != in
	}
	if !dependent && r.dep[l] != "" {
		r.gateConstantInputs(ins, l)
	}
	outs := g.Add(ortgraph.NodeSpec{Op: p.OpType, Domain: p.Domain, Inputs: ins, NOut: len(p.Output), Attrs: p.Attribute, Name: "recompute/" + p.Name})
	// A double-quantized MatMulBnb4 names its 8-bit absmax initializers in metadata, which
	// whatever rebuilds its weight from the clone (Bnb4Forward) reads.
	if codes, scales, offset, ok := autodiff.Bnb4Nested(p); ok {
		c := g.Producer(outs[0])
		c.MetadataProps = append(c.MetadataProps, &onnxpb.StringStringEntryProto{Key: autodiff.Bnb4NestedKey, Value: codes + "," + scales + "," + offset})
	}
	for i, o := range p.Output {
		if o == "" {
			continue
		}
		r.clones[o] = outs[i]
		if t := g.Type(o); t != nil {
			g.SetType(outs[i], t)
		}
	}
	r.cloned++
	return r.clones[v], nil
}

// gateConstantInputs routes one floating-point input of a clone that reads no recomputed
// value through the layer's gate — its smallest of at most smallGate elements (a norm's
// weight, a 4-bit weight's scales), else its first: without a dependency ONNX Runtime could
// run the clone at any time and keep its output (a whole fp16 weight, a normalised
// activation) alive until the backward pass needs it. A small one, because the gate is a
// Where that copies its input: the first RMSNorm of a layer then reads the layer input as it
// is and its weight through the gate.
func (r *recomputer) gateConstantInputs(ins []string, l int) {
	g := r.g
	pick, size := -1, int64(smallGate+1)
	for i, in := range ins {
		if in == "" {
			continue
		}
		switch g.ElemType(in) {
		case ortgraph.Float, ortgraph.Float16, ortgraph.BF16, ortgraph.Double:
			if n := staticSize(g, in); n >= 0 && n < size {
				pick, size = i, n
			} else if pick < 0 && size > smallGate {
				pick = i // the first, unless a small one turns up
			}
		}
	}
	if pick >= 0 {
		in := ins[pick]
		ins[pick] = g.Op("Where", []string{r.gateCond(l), in, in})
		g.SetType(ins[pick], g.Type(in))
	}
}

// smallGate is the most elements gateConstantInputs prefers to gate over a clone's first
// floating-point input (a hidden-size norm weight, a weight's block scales are smaller).
const smallGate = 1 << 20

// staticSize is v's element count, or -1 when a dim is not known statically.
func staticSize(g *ortgraph.Graph, v string) int64 {
	d := g.Dims(v)
	if d == nil {
		return -1
	}
	n := int64(1)
	for _, x := range d {
		if x < 0 {
			return -1
		}
		n *= x
	}
	return n
}

// reuseRecomputedWeights rewires the backward pass's own dequantization of a 4-bit weight
// (autodiff's redequantize, which feeds dx = dy·W) to the recomputation's clone of the forward
// dequantization of the same weight, where the layer's recomputation re-emitted one, and
// returns how many it rewired; Prune then drops the backward copies and their gates.
//
// Why: without this a recomputed 4-bit Linear dequantizes its weight three times per step
// (forward, recomputation, backward), each a full pass writing the fp16 weight; the second
// and third run within the same layer's backward pass, so the recomputed W can serve both.
// Cost: the layer's recomputed fp16 weights stay alive from the recomputation to their dx
// product, within one layer's backward pass (≈ 150 MB for a Llama-3.2-3B layer). The
// no-early-hoisting property holds: the clone is gated on the layer's output gradient (it
// reads its scale through Where(isnan(dy)…)), so it cannot run in the forward pass, and
// only gated clones are reused. The values are identical — same op, same bytes, same scales
// — so gradients do not change by a bit. Linears that are not recomputed keep their own
// gated dequantization.
//
// What is shared is the end of the dequantization chain — the Reshape (and Slice) after the
// DequantizeLinear that autodiff.DequantizedWeight emits — never a DequantizeLinear's own
// output: ONNX Runtime's EnsureUniqueDQForNodeUnit (a level-1 transformer, on whenever
// optimizations are) gives every reader of a DequantizeLinear output its own copy of the
// node, so a DequantizeLinear read by both the recomputed MatMul and the dx MatMul would run
// twice again (measured: 20 DequantizeLinear kernels per layer instead of 14 on the synth
// graphs, with a graph that held 14). A bare DequantizeLinear (no chain after it) is left
// alone for that reason.
func reuseRecomputedWeights(g *ortgraph.Graph, fwd []*onnxpb.NodeProto, isFwd map[*onnxpb.NodeProto]bool, clones map[string]string) int {
	byData := map[string]*onnxpb.NodeProto{} // quantized initializer → forward DequantizeLinear
	for _, n := range fwd {
		if isDQ(n) && g.Initializer(n.Input[0]) != nil {
			byData[n.Input[0]] = n
		}
	}
	if len(byData) == 0 {
		return 0
	}
	cons := g.Consumers()
	reused := 0
	for _, n := range append([]*onnxpb.NodeProto(nil), g.P.Node...) {
		if isFwd[n] || !isDQ(n) || strings.HasPrefix(n.Name, "recompute/") {
			continue
		}
		f := byData[n.Input[0]]
		if f == nil || !sameDequantization(g, f, n) {
			continue
		}
		// Follow the backward chain (DequantizeLinear → Reshape → Slice, one reader each)
		// and the forward one in step, as far as they are the same ops on the same operands.
		bv, fv := n.Output[0], f.Output[0]
		for {
			bc := cons[bv]
			if len(bc) != 1 || !autodiff.IsShapeOnly(g, bc[0]) || bc[0].Input[0] != bv {
				break
			}
			var match *onnxpb.NodeProto
			for _, fc := range cons[fv] {
				if isFwd[fc] && fc.Input[0] == fv && sameOp(fc, bc[0], 1) {
					match = fc
					break
				}
			}
			if match == nil {
				break
			}
			bv, fv = bc[0].Output[0], match.Output[0]
		}
		if bv == n.Output[0] {
			continue // a bare DequantizeLinear: ONNX Runtime would duplicate it again
		}
		w, ok := clones[fv]
		if !ok {
			continue
		}
		// Only a gated clone: its DequantizeLinear's scale must come through a Where, not
		// straight from the initializer (a clone of a layer without an output gradient is not
		// gated).
		c, _ := autodiff.ShapeOnlySource(g, w)
		if c == nil || !isDQ(c) || c.Input[1] == f.Input[1] {
			continue
		}
		g.ReplaceUses(bv, w)
		reused++
	}
	return reused
}

func isDQ(n *onnxpb.NodeProto) bool {
	return isOp(n, "DequantizeLinear") && len(n.Input) >= 2 && len(n.Output) == 1
}

// sameDequantization reports whether the backward node b dequantizes exactly what the
// forward node f does: the same data and zero point, the same attributes, and f's scale
// either directly or through a no-op gate Where(cond, s, s).
func sameDequantization(g *ortgraph.Graph, f, b *onnxpb.NodeProto) bool {
	in := func(n *onnxpb.NodeProto, i int) string {
		if i < len(n.Input) {
			return n.Input[i]
		}
		return ""
	}
	for i := 0; i < max(len(f.Input), len(b.Input)); i++ {
		if i == 1 {
			continue
		}
		if in(f, i) != in(b, i) {
			return false
		}
	}
	if ungated(g, b.Input[1]) != f.Input[1] {
		return false
	}
	return sameAttrs(f, b)
}

// ungated returns s when v = Where(c, s, s), the no-op gate that orders recomputation and
// redequantization (gateConstantInputs, autodiff's redequantize), and v otherwise.
func ungated(g *ortgraph.Graph, v string) string {
	if w := g.Producer(v); isOp(w, "Where") && len(w.Input) == 3 && w.Input[1] == w.Input[2] {
		return w.Input[1]
	}
	return v
}

// sameOp reports whether a and b are the same op with the same attributes and the same
// inputs from index from on.
func sameOp(a, b *onnxpb.NodeProto, from int) bool {
	if a.OpType != b.OpType || a.Domain != b.Domain || len(a.Input) != len(b.Input) {
		return false
	}
	for i := from; i < len(a.Input); i++ {
		if a.Input[i] != b.Input[i] {
			return false
		}
	}
	return sameAttrs(a, b)
}

func sameAttrs(a, b *onnxpb.NodeProto) bool {
	if len(a.Attribute) != len(b.Attribute) {
		return false
	}
	for i := range a.Attribute {
		if !proto.Equal(a.Attribute[i], b.Attribute[i]) {
			return false
		}
	}
	return true
}
