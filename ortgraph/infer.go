package ortgraph

import (
	"strconv"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// inferTypes records element types and, where they follow from the inputs' symbolic
// shapes, the shapes of a new node's outputs. It covers the ops passes and gradient rules
// emit; anything else stays untyped. Types matter downstream: gradient rules pick static
// code paths (no run-time shape arithmetic) when shapes are known, and the placement check
// tells shape math from compute by element type.
func (g *Graph) inferTypes(n *onnxpb.NodeProto) {
	if n.Domain != "" || len(n.Output) == 0 {
		return
	}
	in := func(i int) string {
		if i < len(n.Input) {
			return n.Input[i]
		}
		return ""
	}
	set := func(dt int32, dims []string) {
		if dt == 0 || g.types[n.Output[0]] != nil {
			return
		}
		if dims == nil {
			g.SetType(n.Output[0], &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: dt}}})
			return
		}
		g.SetType(n.Output[0], SymTensorType(dt, dims))
	}
	x := in(0)
	switch n.OpType {
	case "Shape", "Size", "NonZero", "ArgMax", "ArgMin":
		var dims []string
		switch n.OpType {
		case "Shape":
			if r := g.Rank(x); r >= 0 {
				dims = []string{strconv.Itoa(r)}
			}
		case "Size":
			dims = []string{}
		}
		set(Int64, dims)
	case "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor":
		set(Bool, broadcastDims(g.SymDims(x), g.SymDims(in(1))))
	case "Not", "IsNaN", "IsInf":
		set(Bool, g.SymDims(x))
	case "Cast":
		set(int32(AttrInt(n, "to", 0)), g.SymDims(x))
	case "CastLike":
		set(g.ElemType(in(1)), g.SymDims(x))
	case "Neg", "Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Sigmoid", "Identity", "Softmax", "LogSoftmax", "Abs", "Relu", "Erf":
		set(g.ElemType(x), g.SymDims(x))
	case "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum":
		dims := g.SymDims(x)
		dt := g.ElemType(x)
		for _, o := range n.Input[1:] {
			dims = broadcastDims(dims, g.SymDims(o))
			if dt == 0 {
				dt = g.ElemType(o)
			}
		}
		if n.OpType == "Pow" {
			dt = g.ElemType(x)
		}
		set(dt, dims)
	case "Where":
		dims := broadcastDims(broadcastDims(g.SymDims(x), g.SymDims(in(1))), g.SymDims(in(2)))
		dt := g.ElemType(in(1))
		if dt == 0 {
			dt = g.ElemType(in(2))
		}
		set(dt, dims)
	case "Transpose":
		d := g.SymDims(x)
		perm, ok := AttrInts(n, "perm")
		if d == nil || !ok || len(perm) != len(d) {
			set(g.ElemType(x), nil)
			return
		}
		out := make([]string, len(d))
		for i, p := range perm {
			out[i] = d[p]
		}
		set(g.ElemType(x), out)
	case "MatMul":
		a, b := g.SymDims(x), g.SymDims(in(1))
		if len(a) < 2 || len(b) < 2 {
			set(g.ElemType(x), nil)
			return
		}
		batch := broadcastDims(a[:len(a)-2], b[:len(b)-2])
		if batch == nil {
			set(g.ElemType(x), nil)
			return
		}
		set(g.ElemType(x), append(batch, a[len(a)-2], b[len(b)-1]))
	case "Gemm":
		set(g.ElemType(x), []string{"?", "?"})
	case "Reshape", "Expand":
		// The common gradient idiom: reshape/expand to Shape(v) gives v's shape.
		if p := g.prod[in(1)]; p != nil && p.OpType == "Shape" && len(p.Attribute) == 0 {
			set(g.ElemType(x), g.SymDims(p.Input[0]))
			return
		}
		if c, ok := g.ConstInts(in(1)); ok && n.OpType == "Reshape" {
			d := make([]string, len(c))
			for i := range d {
				d[i] = "?"
			}
			set(g.ElemType(x), d)
			return
		}
		set(g.ElemType(x), nil)
	case "ReduceSum", "ReduceMean", "ReduceMax":
		d := g.SymDims(x)
		axes, ok := AttrInts(n, "axes")
		if !ok && in(1) != "" {
			axes, ok = g.ConstInts(in(1))
		}
		keep := AttrInt(n, "keepdims", 1) == 1
		if d == nil || !ok {
			set(g.ElemType(x), nil)
			return
		}
		red := map[int]bool{}
		for _, a := range axes {
			if a < 0 {
				a += int64(len(d))
			}
			red[int(a)] = true
		}
		if len(axes) == 0 {
			for i := range d {
				red[i] = true
			}
		}
		var out []string
		for i, v := range d {
			switch {
			case !red[i]:
				out = append(out, v)
			case keep:
				out = append(out, "1")
			}
		}
		if out == nil {
			out = []string{}
		}
		set(g.ElemType(x), out)
	case "Unsqueeze", "Squeeze", "Slice", "Pad", "Concat", "Gather", "GatherElements", "ScatterElements", "Dropout", "Split", "Trilu", "Flatten", "Tile",
		"DequantizeLinear", "ConstantOfShape", "Range", "CumSum":
		dt := g.ElemType(x)
		switch n.OpType {
		case "DequantizeLinear":
			dt = g.ElemType(in(1))
		case "ConstantOfShape":
			dt = Float
			for _, a := range n.Attribute {
				if a.Name == "value" && a.T != nil {
					dt = a.T.DataType
				}
			}
		}
		if dt == 0 {
			return
		}
		if n.OpType == "Dropout" && len(n.Output) > 1 && n.Output[1] != "" && g.SymDims(x) != nil {
			g.SetType(n.Output[1], SymTensorType(Bool, g.SymDims(x)))
			g.SetType(n.Output[0], SymTensorType(dt, g.SymDims(x)))
			return
		}
		for _, o := range n.Output {
			if o != "" && g.types[o] == nil {
				g.SetType(o, &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: dt}}})
			}
		}
	}
}

// broadcastDims applies numpy broadcasting to symbolic dims; nil when a rank is unknown,
// "?" where the result cannot be told statically.
func broadcastDims(a, b []string) []string {
	if a == nil || b == nil {
		return nil
	}
	n := max(len(a), len(b))
	out := make([]string, n)
	for i := 0; i < n; i++ {
		var x, y string = "1", "1"
		if j := i - (n - len(a)); j >= 0 {
			x = a[j]
		}
		if j := i - (n - len(b)); j >= 0 {
			y = b[j]
		}
		switch {
		case x == y:
			out[i] = x
		case x == "1":
			out[i] = y
		case y == "1":
			out[i] = x
		default:
			out[i] = "?"
		}
	}
	return out
}
