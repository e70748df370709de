package passes

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// RecomputeResult says what the Recompute pass did.
type RecomputeResult struct {
	Layers int // layers whose activations are recomputed
	Cloned int // forward nodes re-emitted for the backward pass
}

// Recompute makes the backward pass of each decoder layer recompute that layer's
// activations from its input instead of keeping them alive from the forward pass
// (gradient checkpointing per layer). Only the layer inputs — the residual stream between
// layers — survive the forward pass. LoRA dropout masks are a deterministic hash of the
// seed input (dropout.go), so they are recomputed like any other activation.
//
// Pattern: forward nodes tagged with a layer (node name or the exporter's name_scopes
// metadata contain "layers.N"); backward nodes reading values produced inside layer N.
// Rewrite: those reads go to clones of the producing forward nodes. Two measures keep ONNX
// Runtime from undoing it: the clones read values from outside the layer through
// Where(isnan(dy[0]), x, x), where dy is the gradient of the layer's output, so they
// cannot run before the backward
// pass reaches the layer (no early hoisting); and since their inputs differ from the
// forward nodes' inputs, common-subexpression elimination cannot merge them back.
// Random draws in the source graph are not re-drawn: a Dropout node's clone reuses the
// forward mask (x·mask/(1−p)), and values computed only from random ops keep their forward
// values, so forward and backward see the same draw.
var Recompute = &ortgraph.Pass{
	Name:     "recompute",
	Doc:      "per-layer activation recomputation in the backward pass (gradient checkpointing)",
	Requires: []*ortgraph.Pass{Backward},
	Run:      runRecompute,
}

var reLayer = regexp.MustCompile(`layers[./_](\d+)[./_'\]]`)

// nodeLayer returns the decoder layer a forward node belongs to, or -1.
func nodeLayer(n *onnxpb.NodeProto) int {
	for _, s := range []string{lastScope(ortgraph.MetaValue(n, "pkg.torch.onnx.name_scopes")) + ".", n.Name + "/"} {
		if m := reLayer.FindStringSubmatch(s); m != nil {
			l, _ := strconv.Atoi(m[1])
			return l
		}
	}
	return -1
}

func runRecompute(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	br := ctx.Result(Backward).(*BackwardResult)
	layerOf := map[string]int{} // forward value → layer of its producer
	nl := map[*onnxpb.NodeProto]int{}
	var fwd []*onnxpb.NodeProto
	for _, n := range g.P.Node {
		if !br.Forward[n] {
			continue
		}
		fwd = append(fwd, n)
		l := nodeLayer(n)
		if l < 0 {
			// Untagged nodes (exporter decompositions without a scope) join the layer
			// their inputs come from, when that is a single layer.
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
	// A propagated tag sticks only if the node feeds an explicitly tagged node of the same
	// layer: nodes after the last layer (final norm, head, loss) stay shared.
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
	// Layer boundaries: values of layer L read by forward nodes outside L (the residual
	// stream) stay alive; they are the checkpoints.
	boundary := map[string]bool{}
	for _, n := range fwd {
		ln := nl[n]
		for _, in := range ortgraph.NodeInputs(n) {
			if l, ok := layerOf[in]; ok && l >= 0 && l != ln {
				boundary[in] = true
			}
		}
	}
	for _, o := range g.P.Output {
		boundary[o.Name] = true
	}
	// dep[L]: a gradient that exists only once the backward pass has reached layer L: the
	// gradient of the layer's last boundary value in forward order (its output). Every
	// backward node of the layer runs after it, so gating on it cannot form a cycle.
	dep := map[int]string{}
	depAt := map[int]int{}
	for i, n := range fwd {
		for _, o := range n.Output {
			l, ok := layerOf[o]
			if !ok || l < 0 || !boundary[o] || br.ValueGrads[o] == "" {
				continue
			}
			if at, seen := depAt[l]; !seen || i > at {
				dep[l], depAt[l] = br.ValueGrads[o], i
			}
		}
	}
	producer := map[string]*onnxpb.NodeProto{}
	// Random draws (dropout masks) and values computed only from them and constants must
	// not be recomputed: a second draw would differ from the forward pass's.
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
	clones := map[string]string{}
	gated := map[string]string{} // (layer input) → gated copy, per layer
	cond := map[int]string{}
	cloned := 0
	// gateCond is a one-element test on the layer's output gradient: false unless it is
	// NaN, and both branches of the Where it feeds are the same value anyway; it only adds
	// the data dependency that keeps recomputation from running early.
	gateCond := func(l int) string {
		if cond[l] == "" {
			first := g.Op("Slice", []string{g.Op("Reshape", []string{dep[l], g.ConstI64(-1)}), g.ConstI64(0), g.ConstI64(1)})
			cond[l] = g.Op("IsNaN", []string{first})
		}
		return cond[l]
	}
	var clone func(v string, l int) (string, error)
	clone = func(v string, l int) (string, error) {
		if c, ok := clones[v]; ok {
			return c, nil
		}
		p := producer[v]
		if random[v] {
			return v, nil // the forward pass's mask stays alive
		}
		if p == nil || layerOf[v] != l || boundary[v] {
			// Outside the layer: the layer input (gated so recomputation waits for the
			// backward pass), a shared value, a parameter or a constant.
			if p != nil && layerOf[v] != l && dep[l] != "" && isActivation(g, v) {
				key := strconv.Itoa(l) + "|" + v
				if gv, ok := gated[key]; ok {
					return gv, nil
				}
				gv := g.Op("Where", []string{gateCond(l), v, v})
				if t := g.Type(v); t != nil {
					g.SetType(gv, t)
				}
				gated[key] = gv
				return gv, nil
			}
			return v, nil
		}
		if p.OpType == "Dropout" && p.Domain == "" {
			// Reuse the forward mask: y = x·mask/(1−p).
			if v != p.Output[0] {
				return v, nil // the mask itself stays alive
			}
			if len(p.Output) < 2 || p.Output[1] == "" {
				return "", fmt.Errorf("dropout node %q has no mask output to reuse", p.Name)
			}
			x, err := clone(p.Input[0], l)
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
			clones[v] = y
			cloned++
			return y, nil
		}
		ins := make([]string, len(p.Input))
		dependent := false
		for i, in := range p.Input {
			if in == "" {
				continue
			}
			c, err := clone(in, l)
			if err != nil {
				return "", err
			}
			ins[i] = c
			dependent = dependent || c != in
		}
		if !dependent && dep[l] != "" {
			// Inputs are all constants (e.g. DequantizeLinear of a 4-bit weight): without a
			// dependency ONNX Runtime could run the clone at any time and keep its output
			// (a whole fp16 weight) alive until the backward pass needs it. Route one
			// floating-point input through the layer's gate.
			for i, in := range ins {
				if in == "" {
					continue
				}
				switch g.ElemType(in) {
				case ortgraph.Float, ortgraph.Float16, ortgraph.BF16:
					ins[i] = g.Op("Where", []string{gateCond(l), in, in})
					g.SetType(ins[i], g.Type(in))
				default:
					continue
				}
				break
			}
		}
		outs := g.Add(ortgraph.NodeSpec{Op: p.OpType, Domain: p.Domain, Inputs: ins, NOut: len(p.Output), Attrs: p.Attribute, Name: "recompute/" + p.Name})
		for i, o := range p.Output {
			if o == "" {
				continue
			}
			clones[o] = outs[i]
			if t := g.Type(o); t != nil {
				g.SetType(outs[i], t)
			}
		}
		cloned++
		return clones[v], nil
	}
	layers := map[int]bool{}
	for _, n := range append([]*onnxpb.NodeProto(nil), g.P.Node...) {
		if br.Forward[n] || len(n.Name) >= 10 && n.Name[:10] == "recompute/" {
			continue
		}
		for i, in := range n.Input {
			l, ok := layerOf[in]
			if !ok || l < 0 || boundary[in] {
				continue
			}
			c, err := clone(in, l)
			if err != nil {
				return nil, err
			}
			n.Input[i] = c
			layers[l] = true
		}
	}
	if len(layers) == 0 {
		return nil, fmt.Errorf("no decoder layer found to recompute (nodes carry no layers.N scope)")
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	g.Prune()
	ctx.Logf("recompute: %d layers, %d forward nodes re-emitted for the backward pass", len(layers), cloned)
	return &RecomputeResult{Layers: len(layers), Cloned: cloned}, nil
}

// isActivation reports whether v is a floating-point tensor computed by the graph (worth
// gating), as opposed to an integer shape or index value.
func isActivation(g *ortgraph.Graph, v string) bool {
	switch g.ElemType(v) {
	case ortgraph.Float, ortgraph.Float16, ortgraph.BF16, ortgraph.Double:
		return g.Initializer(v) == nil
	}
	return false
}
