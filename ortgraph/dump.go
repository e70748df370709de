package ortgraph

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Dump renders a graph as text, one node per line (`outputs = domain.Op[attrs](inputs)`),
// followed by its inputs and outputs with types. Tests keep such dumps as goldens, so a
// change to a pass shows up as a readable diff.
func Dump(g *Graph) string {
	var b strings.Builder
	for _, vi := range g.P.Input {
		fmt.Fprintf(&b, "input %s: %s\n", vi.Name, typeString(g, vi.Name))
	}
	for _, n := range g.P.Node {
		op := n.OpType
		if n.Domain != "" {
			op = n.Domain + "." + op
		}
		fmt.Fprintf(&b, "%s = %s%s(%s)\n", strings.Join(n.Output, ", "), op, attrString(n), strings.Join(n.Input, ", "))
	}
	for _, vi := range g.P.Output {
		fmt.Fprintf(&b, "output %s: %s\n", vi.Name, typeString(g, vi.Name))
	}
	return b.String()
}

func typeString(g *Graph, v string) string {
	d := g.SymDims(v)
	return fmt.Sprintf("%s[%s]", strings.ToLower(DTypeName(g.ElemType(v))), strings.Join(d, ","))
}

func attrString(n *onnxpb.NodeProto) string {
	if len(n.Attribute) == 0 {
		return ""
	}
	var parts []string
	for _, a := range n.Attribute {
		var v string
		switch a.Type {
		case onnxpb.AttributeProto_INT:
			v = fmt.Sprint(a.I)
		case onnxpb.AttributeProto_FLOAT:
			v = fmt.Sprint(a.F)
		case onnxpb.AttributeProto_INTS:
			v = fmt.Sprint(a.Ints)
		case onnxpb.AttributeProto_STRING:
			v = fmt.Sprintf("%q", a.S)
		case onnxpb.AttributeProto_GRAPH:
			v = fmt.Sprintf("graph(%d nodes)", len(a.G.GetNode()))
		case onnxpb.AttributeProto_TENSOR:
			v = fmt.Sprintf("tensor%v", a.T.GetDims())
		default:
			v = "…"
		}
		parts = append(parts, a.Name+"="+v)
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, " ") + "]"
}
