package autodiff

import (
	"fmt"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// reduceAxes returns the axes of a Reduce* node as a value name ("" = all axes), from the
// attribute (before opset 18, or ReduceSum before 13) or the second input.
func (b *Builder) reduceAxes(n *onnxpb.NodeProto) string {
	if ax, ok := ortgraph.AttrInts(n, "axes"); ok {
		return b.ConstI64(ax...)
	}
	return in(n, 1)
}

// ReduceSum: y = Σₐ x ⇒ dx = broadcast(dy) over the reduced axes.
// ReduceMean: y = Σₐ x / m ⇒ dx = broadcast(dy) / m, m = |x| / |y|.
func gradReduceSumMean(b *Builder, n *onnxpb.NodeProto, dy []string, need []bool) ([]string, error) {
	g := grads(n)
	for i := 1; i < len(need); i++ {
		if need[i] {
			return nil, fmt.Errorf("reduction axes have no gradient")
		}
	}
	x := n.Input[0]
	d := dy[0]
	axes := b.reduceAxes(n)
	if ortgraph.AttrInt(n, "keepdims", 1) == 0 && axes != "" {
		d = b.Op("Unsqueeze", []string{d, axes})
	}
	if axes == "" && ortgraph.AttrInt(n, "noop_with_empty_axes", 0) == 1 {
		g[0] = d
		return g, nil
	}
	d = b.Op("Expand", []string{d, b.Op("Shape", []string{x})})
	if n.OpType == "ReduceMean" {
		if m, ok := b.reducedCount(x, axes); ok {
			// A constant m: computing it from Size at run time would put a float Cast
			// on the CPU (ONNX Runtime keeps shape arithmetic there) and copy it over.
			d = b.Op("Div", []string{d, b.ConstLike(float32(m), x)})
		} else {
			m := b.Op("Div", []string{b.Op("Size", []string{x}), b.Op("Size", []string{n.Output[0]})})
			d = b.Op("Div", []string{d, b.castLikeV(m, x)})
		}
	}
	g[0] = d
	return g, nil
}

// castLikeV casts v to the element type of like.
func (b *Builder) castLikeV(v, like string) string {
	if dt := b.ElemType(like); dt != 0 {
		return b.Op("Cast", []string{v}, ortgraph.AInt("to", int64(dt)))
	}
	return b.Op("CastLike", []string{v, like})
}

// reducedCount returns the number of elements a reduction over axes averages, when x's
// dims along those axes are static ("" axes: every axis).
func (b *Builder) reducedCount(x, axes string) (int64, bool) {
	dims := b.Dims(x)
	if dims == nil {
		return 0, false
	}
	var ax []int64
	if axes == "" {
		for i := range dims {
			ax = append(ax, int64(i))
		}
	} else if v, ok := b.ConstInts(axes); ok {
		ax = v
	} else {
		return 0, false
	}
	m := int64(1)
	for _, a := range ax {
		if a < 0 {
			a += int64(len(dims))
		}
		if a < 0 || a >= int64(len(dims)) || dims[a] < 0 {
			return 0, false
		}
		m *= dims[a]
	}
	return m, true
}
