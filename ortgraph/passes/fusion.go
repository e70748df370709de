package passes

import (
	"slices"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// FusionResult says what a fusing pass (RMSNorm, Rotary, GroupedKV, NBitsForward) did.
type FusionResult struct {
	Fused   int      // patterns replaced
	Skipped []string // matches left as they are, with the reason
}

// report logs the matches left alone, with their reasons, and the count fused as what.
func (r *FusionResult) report(ctx *ortgraph.Context, pass, what string) {
	for _, s := range r.Skipped {
		ctx.Logf("%s: left as it is: %s", pass, s)
	}
	if r.Fused > 0 {
		ctx.Logf("%s: %d %s", pass, r.Fused, what)
	}
}

// finish reports r (report) and, where any pattern was fused, removes the nodes the rewrites
// replaced from ctx.G, reindexes it and imports domain, whose ops the rewrites wrote.
func (r *FusionResult) finish(ctx *ortgraph.Context, pass, what string, gone []*onnxpb.NodeProto, domain string) {
	r.report(ctx, pass, what)
	if r.Fused == 0 {
		return
	}
	g := ctx.G
	g.P.Node = slices.DeleteFunc(g.P.Node, func(n *onnxpb.NodeProto) bool { return slices.Contains(gone, n) })
	g.Reindex()
	if g.M.OpsetVersion(domain) < 1 {
		g.M.SetOpset(domain, 1)
	}
}

// isTranspose reports whether n is a Transpose whose perm attribute is exactly perm.
func isTranspose(n *onnxpb.NodeProto, perm ...int64) bool {
	if !isOp(n, "Transpose") {
		return false
	}
	p, ok := ortgraph.AttrInts(n, "perm")
	return ok && slices.Equal(p, perm)
}

// soleReaders answers the fusing passes' question whether a value inside a pattern is read
// only there: who reads each value (cons), and which values are graph outputs (read by the
// graph's caller, so never only inside a pattern).
type soleReaders struct {
	cons    map[string][]*onnxpb.NodeProto
	outputs map[string]bool
}

func newSoleReaders(g *ortgraph.Graph, cons map[string][]*onnxpb.NodeProto) soleReaders {
	r := soleReaders{cons: cons, outputs: map[string]bool{}}
	for _, o := range g.P.Output {
		r.outputs[o.Name] = true
	}
	return r
}

// single returns the one node reading v, unless v is read by several or is a graph output.
func (r soleReaders) single(v string) (*onnxpb.NodeProto, bool) {
	c := r.cons[v]
	if len(c) != 1 || r.outputs[v] {
		return nil, false
	}
	return c[0], true
}

// onlyBy reports whether v is read by nodes alone and is not a graph output.
func (r soleReaders) onlyBy(v string, nodes []*onnxpb.NodeProto) bool {
	return !r.outputs[v] && onlyReadBy(r.cons[v], nodes)
}

// onlyReadBy reports whether every reader is one of nodes.
func onlyReadBy(readers, nodes []*onnxpb.NodeProto) bool {
	for _, r := range readers {
		found := false
		for _, n := range nodes {
			if r == n {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// knownShape reports whether a and b are one shape (Graph.SymDims) whose every dim is known:
// neither "?" (autodiff records rank-only types so) nor empty.
func knownShape(a, b []string) bool {
	return len(a) > 0 && slices.Equal(a, b) && !slices.ContainsFunc(a, func(d string) bool { return !knownDim(d) })
}

// knownDim reports whether d, a dim of Graph.SymDims, is a number or a name.
func knownDim(d string) bool { return d != "" && d != "?" }
