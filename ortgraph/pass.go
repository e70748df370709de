package ortgraph

import (
	"fmt"
	"strings"
)

// A Pass is one rewrite of a graph, declared as a value (in the style of
// golang.org/x/tools/go/analysis): a name, a one-paragraph Doc, the passes whose results
// it needs, and Run. Each pass follows pattern → check (with a reason on failure) →
// rewrite, and returns an error instead of rewriting half a match.
type Pass struct {
	Name     string
	Doc      string
	Requires []*Pass
	// Run rewrites ctx.G and may return a result that later passes read with ctx.Result.
	Run func(ctx *Context) (any, error)
}

// Context is what a pass sees: the graph, the caller's configuration and the results of
// the passes it requires.
type Context struct {
	G       *Graph
	Config  any
	Logf    func(format string, args ...any)
	results map[*Pass]any
}

// Result returns the result of a pass that already ran; asking for one that did not is a
// bug in the pass's Requires list.
func (c *Context) Result(p *Pass) any {
	r, ok := c.results[p]
	if !ok {
		panic(fmt.Sprintf("pass %q result requested but it did not run (missing from Requires?)", p.Name))
	}
	return r
}

// RunPasses runs the given passes and everything they require, each once, in dependency
// order. Errors are wrapped with the failing pass's name.
func RunPasses(g *Graph, config any, logf func(string, ...any), passes ...*Pass) (*Context, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	ctx := &Context{G: g, Config: config, Logf: logf, results: map[*Pass]any{}}
	var order []*Pass
	state := map[*Pass]int{} // 1 visiting, 2 done
	var visit func(p *Pass, path []string) error
	visit = func(p *Pass, path []string) error {
		switch state[p] {
		case 1:
			return fmt.Errorf("pass dependency cycle: %s -> %s", strings.Join(path, " -> "), p.Name)
		case 2:
			return nil
		}
		state[p] = 1
		for _, r := range p.Requires {
			if err := visit(r, append(path, p.Name)); err != nil {
				return err
			}
		}
		state[p] = 2
		order = append(order, p)
		return nil
	}
	for _, p := range passes {
		if err := visit(p, nil); err != nil {
			panic(err) // a cycle is a programming error in the pass declarations
		}
	}
	for _, p := range order {
		r, err := p.Run(ctx)
		if err != nil {
			return ctx, fmt.Errorf("%s: %w", p.Name, err)
		}
		ctx.results[p] = r
	}
	return ctx, nil
}
