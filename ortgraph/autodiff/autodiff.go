package autodiff

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// GradFunc builds the gradients of a node's inputs from the gradients of its outputs.
// dy[i] is the gradient flowing into output i ("" when none does); need[i] says whether
// input i needs a gradient. It returns one name per input ("" where none is needed, or
// Absorbed).
type GradFunc func(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error)

// Absorbed is what a rule returns for an input whose whole gradient path it has folded into
// the gradient of another input: the input is computed from that other input by one
// producer, and the rule differentiated through the producer itself (the SiLU case of Mul).
// The input then gets no contribution from this node, and its producer's rule runs only for
// the input's other readers, if any.
const Absorbed = "\x00absorbed"

// Supported lists the ops that have a gradient rule, as "domain.Op" (default domain bare).
func Supported() []string {
	var out []string
	for k := range gradients {
		if k.domain == "" {
			out = append(out, k.op)
		} else {
			out = append(out, k.domain+"."+k.op)
		}
	}
	sort.Strings(out)
	return out
}

// Builder emits backward nodes into the graph; gradient rules use it and its helpers.
type Builder struct {
	*ortgraph.Graph
	opset      int64
	valueGrads map[string]string
	fused      bool
	fusedNorm  bool
	// folded holds gradient contributions a rule gives values other than its node's inputs
	// (a fused rule folding the nodes that produce them: gradSwiGLU); backprop adds them to
	// those values' totals after the rule.
	folded map[string][]string
	// readers counts the readers of each value in the forward graph (for fused rules, which
	// may fold a node only when their node is its value's sole reader).
	readers map[string]int
}

// Options for Backward.
type Options struct {
	// Seed is the name of the tensor fed as the gradient of the loss (same shape as the
	// loss). Empty means a constant 1.
	Seed string
	// FusedKernels lets rules emit ortq's own ops (domain kernels.Domain, which sessions
	// run through kernels.Register): the float16 SwiGLU gradient as one SwiGLUGrad node.
	FusedKernels bool
	// FusedNormGrad lets the float16 RMSNorm rule emit one RMSNormGrad node of ortq's domain
	// where the norm's inv_std_var is saved (float32) and its weight needs no gradient.
	FusedNormGrad bool
}

// Result of Backward.
type Result struct {
	// Grads maps each parameter to the name of its gradient value.
	Grads map[string]string
	// ValueGrads maps every forward value that received a gradient to it (passes use it,
	// e.g. recomputation orders work after the gradient of a layer's output).
	ValueGrads map[string]string
	// Active is the number of forward nodes that needed a gradient rule.
	Active int
}

// Backward appends to g the nodes computing d(loss)/d(p) for every p in wrt and returns
// the gradient value names. Parameters the loss does not depend on get a zero gradient
// of their shape (so callers always receive every gradient).
func Backward(g *ortgraph.Graph, loss string, wrt []string, opt Options) (*Result, error) {
	b := &Builder{Graph: g, opset: g.M.OpsetVersion(""), fused: opt.FusedKernels, fusedNorm: opt.FusedNormGrad,
		folded: map[string][]string{}, readers: map[string]int{}}
	// Activity analysis walks the node list in order, so it must be topological.
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	seed := opt.Seed
	if seed == "" {
		seed = b.Op("ConstantOfShape", []string{b.Op("Shape", []string{loss})},
			ortgraph.ATensor("value", ortgraph.FloatTensor("one", g.ElemType(loss), []int64{1}, []float32{1})))
	}
	nodes := append([]*onnxpb.NodeProto(nil), g.P.Node...)
	for _, n := range nodes {
		for _, in := range n.Input {
			b.readers[in]++
		}
	}
	b.valueGrads = map[string]string{}
	got, active, err := b.backprop(nodes, map[string]string{loss: seed}, wrt)
	if err != nil {
		return nil, err
	}
	res := &Result{Grads: map[string]string{}, Active: active, ValueGrads: b.valueGrads}
	for _, p := range wrt {
		if got[p] == "" {
			// The loss does not depend on p: its gradient is zero.
			got[p] = b.Op("Mul", []string{p, b.ConstLike(0, p)})
		}
		res.Grads[p] = got[p]
	}
	return res, nil
}

// backprop differentiates the given nodes (in topological order) from the seeded output
// gradients back to wrt. Rules that expand an op into primitive ops call it recursively
// on their expansion. It returns the gradient of each wrt value ("" when the seeds do not
// depend on it) and the number of nodes that needed a rule.
func (b *Builder) backprop(nodes []*onnxpb.NodeProto, seeds map[string]string, wrt []string) (map[string]string, int, error) {
	varies, useful, contrib, err := activity(nodes, seeds, wrt)
	if err != nil {
		return nil, 0, err
	}
	active := 0
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		dy := make([]string, len(n.Output))
		hasGrad := false
		for j, o := range n.Output {
			if o != "" && len(contrib[o]) > 0 && varies[o] {
				dy[j] = b.total(o, contrib[o])
				if b.valueGrads != nil {
					b.valueGrads[o] = dy[j]
				}
				hasGrad = true
			}
		}
		if !hasGrad {
			continue
		}
		need := make([]bool, len(n.Input))
		needAny := false
		for j, in := range n.Input {
			if in != "" && varies[in] && useful[in] {
				need[j] = true
				needAny = true
			}
		}
		if !needAny {
			continue
		}
		active++
		dx, err := b.differentiate(n, dy, need)
		if err != nil {
			return nil, 0, err
		}
		for j := range n.Input {
			if need[j] && dx[j] != Absorbed {
				contrib[n.Input[j]] = append(contrib[n.Input[j]], dx[j])
			}
		}
		for v, parts := range b.folded {
			contrib[v] = append(contrib[v], parts...)
			delete(b.folded, v)
		}
	}
	out := map[string]string{}
	for _, p := range wrt {
		if len(contrib[p]) > 0 {
			out[p] = b.total(p, contrib[p])
		}
	}
	return out, active, nil
}

// activity returns the values that depend on a parameter (varies), those the seeded
// outputs depend on (useful), and the seeds as the first gradient contributions.
func activity(nodes []*onnxpb.NodeProto, seeds map[string]string, wrt []string) (varies, useful map[string]bool, contrib map[string][]string, err error) {
	varies = map[string]bool{}
	for _, p := range wrt {
		varies[p] = true
	}
	for _, n := range nodes {
		if nonDifferentiable(n) {
			continue
		}
		for _, in := range n.Input {
			if varies[in] {
				for _, o := range n.Output {
					varies[o] = true
				}
				break
			}
		}
	}
	useful = map[string]bool{}
	contrib = map[string][]string{}
	anySeed := false
	for v, s := range seeds {
		if varies[v] {
			useful[v] = true
			contrib[v] = []string{s}
			anySeed = true
		}
	}
	if !anySeed {
		var names []string
		for v := range seeds {
			names = append(names, v)
		}
		sort.Strings(names)
		return nil, nil, nil, fmt.Errorf("%v does not depend on any of the %d parameters", names, len(wrt))
	}
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		if !slices.ContainsFunc(n.Output, func(o string) bool { return useful[o] }) {
			continue
		}
		for _, in := range n.Input {
			if varies[in] {
				useful[in] = true
			}
		}
	}
	return varies, useful, contrib, nil
}

// differentiate runs n's gradient rule and checks what it returns: one gradient per input
// that needs one, each with the input's shape and element type where both are statically
// known. Rules unbroadcast their gradients themselves (unbroadcast), so a gradient of
// another shape is a broken rule, reported with the node, op and input instead of being
// summed into a wrong-shaped total. An untyped gradient (an op type inference does not
// cover) stays untyped, and the rules reading it take their dynamic-shape paths: the driver
// never copies the input's type onto it, which would hide a wrong shape.
func (b *Builder) differentiate(n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	f := gradients[opKey{n.Domain, n.OpType}]
	if f == nil {
		return nil, fmt.Errorf("node %q: op %s has no gradient rule in ortq's autodiff (supported: %v)", n.Name, opName(n), Supported())
	}
	saved := b.Scope
	b.Scope = "grad/" + n.Name
	dx, err := f(b, n, dy, need)
	b.Scope = saved
	if err != nil {
		return nil, fmt.Errorf("node %q (%s): %w", n.Name, opName(n), err)
	}
	if len(dx) != len(n.Input) {
		panic(fmt.Sprintf("gradient of %s returned %d grads for %d inputs", opName(n), len(dx), len(n.Input)))
	}
	for j, x := range n.Input {
		if !need[j] {
			continue
		}
		if dx[j] == "" {
			panic(fmt.Sprintf("gradient of %s (node %q) gave no gradient for input %d (%q)", opName(n), n.Name, j, x))
		}
		if dx[j] == Absorbed {
			continue
		}
		if err := b.checkGradType(x, dx[j]); err != nil {
			return nil, fmt.Errorf("node %q (%s): gradient of input %d (%q): %w", n.Name, opName(n), j, x, err)
		}
	}
	return dx, nil
}

// checkGradType compares the static type of gradient dx with that of its input x: the
// element types when both are known, the ranks when both are known, and every dimension
// that both give as a number (symbolic dimensions may be equal under different names).
func (b *Builder) checkGradType(x, dx string) error {
	if xt, gt := b.ElemType(x), b.ElemType(dx); xt != 0 && gt != 0 && xt != gt {
		return fmt.Errorf("element type %s, the input's is %s", ortgraph.DTypeName(gt), ortgraph.DTypeName(xt))
	}
	xd, gd := b.Dims(x), b.Dims(dx)
	if xd == nil || gd == nil {
		return nil
	}
	mismatch := len(xd) != len(gd)
	for i := 0; !mismatch && i < len(xd); i++ {
		mismatch = xd[i] >= 0 && gd[i] >= 0 && xd[i] != gd[i]
	}
	if mismatch {
		return fmt.Errorf("shape [%s], the input's is [%s] (a rule must return its input's shape, unbroadcast)", strings.Join(b.SymDims(dx), ","),
			strings.Join(b.SymDims(x), ","))
	}
	return nil
}

// expand differentiates a rule's primitive expansion: the rule has emitted nodes (taken
// from index mark of the node list on) computing outs from ins; seeds are the gradients
// of outs. It returns the gradient of every ins value ("" when none).
func (b *Builder) expand(mark int, seeds map[string]string, ins []string) ([]string, error) {
	nodes := append([]*onnxpb.NodeProto(nil), b.P.Node[mark:]...)
	got, _, err := b.backprop(nodes, seeds, ins)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ins))
	for i, v := range ins {
		out[i] = got[v]
	}
	return out, nil
}

// total sums the gradient contributions to v once and caches the sum.
func (b *Builder) total(v string, parts []string) string {
	if len(parts) > 1 {
		parts = b.concatTiledPads(v, parts)
	}
	if len(parts) == 1 {
		return parts[0]
	}
	s := b.Op("Sum", parts)
	if t := b.Type(v); t != nil {
		b.SetType(s, t)
	}
	return s
}

// concatTiledPads replaces contributions that are zero-padded pieces of v tiling one of its
// axes — Slice gradients, e.g. of rotary's rotate_half, which slices x into halves — by one
// Concat of the pieces: the same sum without writing each piece at full size and adding them.
func (b *Builder) concatTiledPads(v string, parts []string) []string {
	dims := b.Dims(v)
	if dims == nil {
		return parts
	}
	type piece struct {
		begin, size int64
		in          string
		part        int
	}
	byAxis := map[int64][]piece{}
	for i, p := range parts {
		n := b.Producer(p)
		if n == nil || n.OpType != "Pad" || n.Domain != "" || len(n.Input) != 4 || n.Input[2] != "" ||
			ortgraph.AttrString(n, "mode", "constant") != "constant" {
			continue
		}
		pads, ok1 := b.ConstInts(n.Input[1])
		axes, ok2 := b.ConstInts(n.Input[3])
		if !ok1 || !ok2 || len(axes) != 1 || len(pads) != 2 {
			continue
		}
		a := axes[0]
		if a < 0 {
			a += int64(len(dims))
		}
		if a < 0 || int(a) >= len(dims) || dims[a] <= 0 {
			continue
		}
		byAxis[a] = append(byAxis[a], piece{begin: pads[0], size: dims[a] - pads[0] - pads[1], in: n.Input[0], part: i})
	}
	for a, ps := range byAxis {
		if len(ps) < 2 {
			continue
		}
		slices.SortFunc(ps, func(x, y piece) int { return int(x.begin - y.begin) })
		pos, ins := int64(0), make([]string, len(ps))
		for i, p := range ps {
			if p.begin != pos || p.size <= 0 {
				break
			}
			pos += p.size
			ins[i] = p.in
		}
		if pos != dims[a] {
			continue
		}
		c := b.Op("Concat", ins, ortgraph.AInt("axis", a))
		if t := b.Type(v); t != nil {
			b.SetType(c, t)
		}
		drop := map[int]bool{}
		for _, p := range ps {
			drop[p.part] = true
		}
		rest := []string{c}
		for i, p := range parts {
			if !drop[i] {
				rest = append(rest, p)
			}
		}
		return rest
	}
	return parts
}

func opName(n *onnxpb.NodeProto) string {
	if n.Domain == "" {
		return n.OpType
	}
	return n.Domain + "." + n.OpType
}

// ConstLike returns a 0-d constant with v's element type (CastLike when the type is not
// recorded, so rules work on graphs without value_info).
func (b *Builder) ConstLike(v float32, like string) string {
	if dt := b.ElemType(like); dt != 0 {
		return b.ConstF(dt, v)
	}
	return b.Op("CastLike", []string{b.ConstF(ortgraph.Float, v), like})
}

// sameShape reports whether a and b statically have the same shape (every dim known and
// equal, or the same symbolic name).
func (b *Builder) sameShape(x, y string) bool {
	dx, dy := b.SymDims(x), b.SymDims(y)
	if dx == nil || dy == nil || len(dx) != len(dy) {
		return false
	}
	for i := range dx {
		if dx[i] == "?" || dx[i] != dy[i] {
			return false
		}
	}
	return true
}

// Unbroadcast reduces dy (the gradient of a broadcasting op's output) to the shape of its
// input x: ∂L/∂x sums ∂L/∂y over every axis along which x was broadcast. When shapes are
// not statically equal, the axes are found at run time: x's shape is left-padded with 1s
// to dy's rank, the axes where the two differ are summed (keepdims), and the result is
// reshaped to x's shape (which also drops the padded leading axes).
func (b *Builder) Unbroadcast(dy, x string) string {
	if b.sameShape(dy, x) {
		return dy
	}
	if dx := b.Dims(x); dx != nil && len(dx) == 0 {
		// x is a scalar: sum everything.
		return b.Op("ReduceSum", []string{dy}, ortgraph.AInt("keepdims", 0))
	}
	rx, ry := b.Rank(x), b.Rank(dy)
	if rx >= 0 && ry >= 0 {
		// Static ranks: sum the leading axes x lacks, then the axes where x is statically 1
		// and dy is not known to be 1. Unknown dims of x fall back to the dynamic path.
		xd, yd := b.Dims(x), b.Dims(dy)
		var axes []int64
		static := true
		for i := 0; i < ry; i++ {
			j := i - (ry - rx)
			switch {
			case j < 0:
				axes = append(axes, int64(i))
			case xd[j] == 1 && yd[i] != 1:
				axes = append(axes, int64(i))
			case xd[j] == -1:
				// x dim unknown: x may be broadcast along it unless dy carries the same
				// symbolic dim.
				xs, ys := b.SymDims(x), b.SymDims(dy)
				if xs[j] == "?" || xs[j] != ys[i] {
					static = false
				}
			}
		}
		if static {
			if len(axes) == 0 {
				return dy
			}
			s := b.sumAxes(dy, axes, yd)
			return b.Op("Reshape", []string{s, b.Op("Shape", []string{x})})
		}
	}
	shx := b.Op("Shape", []string{x})
	shy := b.Op("Shape", []string{dy})
	// pad = ones(rank(dy) - rank(x)); padded = concat(pad, shape(x))
	d := b.Op("Sub", []string{b.Op("Shape", []string{shy}), b.Op("Shape", []string{shx})})
	ones := b.Op("ConstantOfShape", []string{d}, ortgraph.ATensor("value", ortgraph.Int64Tensor("one", []int64{1}, []int64{1})))
	padded := b.Op("Concat", []string{ones, shx}, ortgraph.AInt("axis", 0))
	diff := b.Op("Not", []string{b.Op("Equal", []string{padded, shy})})
	axes := b.Op("Reshape", []string{b.Op("NonZero", []string{diff}), b.ConstI64(-1)})
	s := b.Op("ReduceSum", []string{dy, axes}, ortgraph.AInt("keepdims", 1), ortgraph.AInt("noop_with_empty_axes", 1))
	return b.Op("Reshape", []string{s, shx})
}

// sumAxes is ReduceSum(dy, axes, keepdims) — except for one short inner axis (a
// grouped-query attention's repeat_kv, [b, kv, rep, s, d] summed over rep), which it sums as
// Split + Sum: ONNX Runtime's CUDA provider hands reductions over a middle axis to cuDNN, which
// took 0.12 ms for a [7, 8, 3, 512, 128] float16 tensor on an H200, several times the elementwise
// cost.
func (b *Builder) sumAxes(dy string, axes, dims []int64) string {
	if len(axes) == 1 {
		a := axes[0]
		if n := dims[a]; n > 1 && n <= 8 && int(a) < len(dims)-1 && a > 0 {
			parts := b.Add(ortgraph.NodeSpec{Op: "Split", Inputs: []string{dy, b.ConstI64(slices.Repeat([]int64{1}, int(n))...)}, NOut: int(n),
				Attrs: []ortgraph.Attr{ortgraph.AInt("axis", a)}})
			return b.Op("Sum", parts)
		}
	}
	return b.Op("ReduceSum", []string{dy, b.ConstI64(axes...)}, ortgraph.AInt("keepdims", 1))
}

// in returns input i of n, or "" when absent.
func in(n *onnxpb.NodeProto, i int) string {
	if i < len(n.Input) {
		return n.Input[i]
	}
	return ""
}

// grads is a helper to build the per-input result slice.
func grads(n *onnxpb.NodeProto) []string { return make([]string, len(n.Input)) }
