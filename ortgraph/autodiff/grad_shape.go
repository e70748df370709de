package autodiff

import (
	"fmt"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Reshape/Flatten/Squeeze/Unsqueeze only relabel the elements ⇒ dx = reshape(dy, shape(x)).
func gradReshapeLike(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	for i := 1; i < len(need); i++ {
		if need[i] {
			return nil, fmt.Errorf("%s input %d (%q) is a shape and has no gradient", n.OpType, i, n.Input[i])
		}
	}
	g[0] = b.Op("Reshape", []string{dy[0], b.Op("Shape", []string{n.Input[0]})})
	return g, nil
}

// Transpose: y = xᵖ ⇒ dx = dyᵖ⁻¹ (the inverse permutation).
func gradTranspose(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	perm, ok := ortgraph.AttrInts(n, "perm")
	if !ok {
		// Default perm reverses the axes; its inverse is itself. Spelled out when the rank
		// is known: ONNX Runtime 1.29 aborted the process creating a session whose
		// perm-less Transpose read a DequantizeLinear (measured on the CPU provider).
		r := b.Rank(n.Input[0])
		if r <= 0 {
			return []string{b.Op("Transpose", dy[:1])}, nil
		}
		perm = make([]int64, r)
		for i := range perm {
			perm[i] = int64(r - 1 - i)
		}
	}
	inv := make([]int64, len(perm))
	for i, p := range perm {
		inv[p] = int64(i)
	}
	return []string{b.Op("Transpose", dy[:1], ortgraph.AInts("perm", inv...))}, nil
}

// Expand: y = broadcast(x) ⇒ dx = unbroadcast(dy, x).
func gradExpand(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	if need[1] {
		return nil, fmt.Errorf("the shape input of Expand has no gradient")
	}
	g[0] = b.Unbroadcast(dy[0], n.Input[0])
	return g, nil
}

// Concat: y = [x₁ … xₖ] along axis ⇒ dxᵢ = the matching slice of dy (one Split).
func gradConcat(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	axis := ortgraph.AttrInt(n, "axis", 0)
	var sizes []string
	for _, x := range n.Input {
		sizes = append(sizes, b.Op("Gather", []string{b.Op("Shape", []string{x}), b.ConstI64(axis)}))
	}
	split := b.Op("Concat", sizes, ortgraph.AInt("axis", 0))
	outs := b.Add(ortgraph.NodeSpec{Op: "Split", Inputs: []string{dy[0], split}, NOut: len(n.Input), Attrs: []ortgraph.Attr{ortgraph.AInt("axis", axis)}})
	g := grads(n)
	for i := range n.Input {
		if need[i] {
			g[i] = outs[i]
		}
	}
	return g, nil
}

// Split: [y₁ … yₖ] = split(x) ⇒ dx = concat(dyᵢ), with zeros for outputs that got no gradient.
func gradSplit(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	axis := ortgraph.AttrInt(n, "axis", 0)
	parts := make([]string, len(n.Output))
	for i, d := range dy {
		if d == "" {
			d = b.Op("Mul", []string{n.Output[i], b.ConstLike(0, n.Output[i])})
		}
		parts[i] = d
	}
	g := grads(n)
	g[0] = b.Op("Concat", parts, ortgraph.AInt("axis", axis))
	// dx has x's type: readers (a MatMul's Unbroadcast) then see static shapes.
	if t := b.Type(n.Input[0]); t != nil {
		b.SetType(g[0], t)
	}
	return g, nil
}

// Slice (unit steps): y = x[s:e] ⇒ dx = pad(dy) with zeros, begin pads = clamp(s) and end
// pads = dim − clamp(e) on each sliced axis. Starts and ends are normalised at run time
// the way Slice itself does (negative indices count from the end, then clamp to [0, dim]).
func gradSlice(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	for i := 1; i < len(need); i++ {
		if need[i] {
			return nil, fmt.Errorf("Slice index input %d has no gradient", i)
		}
	}
	if b.opset < 10 {
		return nil, fmt.Errorf("Slice gradient needs opset ≥ 10 (inputs starts/ends)")
	}
	x := n.Input[0]
	starts, ends := n.Input[1], n.Input[2]
	axes := in(n, 3)
	if steps := in(n, 4); steps != "" {
		sv, ok := b.ConstInts(steps)
		if !ok {
			return nil, fmt.Errorf("Slice with dynamic steps is not supported")
		}
		for _, s := range sv {
			if s != 1 {
				return nil, fmt.Errorf("Slice with step %d is not supported by the gradient (only step 1)", s)
			}
		}
	}
	if axes == "" {
		// Default axes are 0..len(starts)-1.
		sv, ok := b.ConstInts(starts)
		if !ok {
			return nil, fmt.Errorf("Slice without axes needs constant starts")
		}
		ax := make([]int64, len(sv))
		for i := range ax {
			ax[i] = int64(i)
		}
		axes = b.ConstI64(ax...)
	}
	if b.opset < 18 {
		return nil, fmt.Errorf("Slice gradient uses Pad with axes (opset ≥ 18); the model imports opset %d", b.opset)
	}
	if pads, ax, ok := b.staticSlicePads(x, starts, ends, axes); ok {
		// Constant indices on statically sized axes (rotary's half-splits): one Pad.
		g[0] = b.Op("Pad", []string{dy[0], b.ConstI64(pads...), "", b.ConstI64(ax...)})
		return g, nil
	}
	// Normalise negative axes: axes' = axes + rank·(axes < 0).
	rank := b.Op("Shape", []string{b.Op("Shape", []string{x})})
	zeroI := b.ConstI64(0)
	negAx := b.Op("Less", []string{axes, zeroI})
	axesN := b.Op("Where", []string{negAx, b.Op("Add", []string{axes, rank}), axes})
	dims := b.Op("Gather", []string{b.Op("Shape", []string{x}), axesN})
	norm := func(v string) string {
		v = b.Op("Cast", []string{v}, ortgraph.AInt("to", int64(ortgraph.Int64)))
		neg := b.Op("Less", []string{v, zeroI})
		v = b.Op("Where", []string{neg, b.Op("Add", []string{v, dims}), v})
		return b.Op("Min", []string{b.Op("Max", []string{v, zeroI}), dims})
	}
	s, e := norm(starts), norm(ends)
	e = b.Op("Max", []string{e, s}) // empty slices: end ≥ start
	pads := b.Op("Concat", []string{s, b.Op("Sub", []string{dims, e})}, ortgraph.AInt("axis", 0))
	g[0] = b.Op("Pad", []string{dy[0], pads, "", axesN})
	return g, nil
}

// Gather: y = x[idx] along axis ⇒ dx = scatter-add of dy into zeros(x) at idx. Only the
// data input is differentiable.
func gradGather(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	if need[1] {
		return nil, fmt.Errorf("Gather indices have no gradient")
	}
	axis := ortgraph.AttrInt(n, "axis", 0)
	x, idx := n.Input[0], n.Input[1]
	if iv, ok := b.ConstInts(idx); ok && len(iv) == 1 && b.Rank(idx) == 0 {
		// Scalar index (the common "take one slice" case): pad dy back in place.
		dyU := b.Op("Unsqueeze", []string{dy[0], b.ConstI64(axis)})
		start := iv[0]
		dims := b.Op("Gather", []string{b.Op("Shape", []string{x}), b.ConstI64(axis)})
		st := b.ConstI64(start)
		if start < 0 {
			st = b.Op("Add", []string{st, dims})
		}
		after := b.Op("Sub", []string{b.Op("Sub", []string{dims, st}), b.ConstI64(1)})
		pads := b.Op("Concat", []string{st, after}, ortgraph.AInt("axis", 0))
		g[0] = b.Op("Pad", []string{dyU, pads, "", b.ConstI64(axis)})
		return g, nil
	}
	return nil, fmt.Errorf("Gather gradient for non-scalar indices is not supported (embeddings are frozen in ortq)")
}

// staticSlicePads computes Slice's gradient padding at build time when starts, ends and
// axes are constants and the sliced dims of x are known.
func (b *Builder) staticSlicePads(x, starts, ends, axes string) (pads, ax []int64, ok bool) {
	sv, ok1 := b.ConstInts(starts)
	ev, ok2 := b.ConstInts(ends)
	av, ok3 := b.ConstInts(axes)
	dims := b.Dims(x)
	if !ok1 || !ok2 || !ok3 || dims == nil || len(sv) != len(av) || len(ev) != len(av) {
		return nil, nil, false
	}
	clamp := func(v, d int64) int64 {
		if v < 0 {
			v += d
		}
		return min(max(v, 0), d)
	}
	begin := make([]int64, len(av))
	end := make([]int64, len(av))
	for i, a := range av {
		if a < 0 {
			a += int64(len(dims))
		}
		if a < 0 || int(a) >= len(dims) || dims[a] < 0 {
			return nil, nil, false
		}
		d := dims[a]
		s, e := clamp(sv[i], d), clamp(ev[i], d)
		e = max(e, s)
		begin[i], end[i] = s, d-e
		ax = append(ax, a)
	}
	return append(begin, end...), ax, true
}
