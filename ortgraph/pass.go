package ortgraph

import "fmt"

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
	return RunPassesWith(g, config, logf, nil, passes...)
}

// RunPassesWith is RunPasses where some passes are substituted: a pass that requires X
// runs after subst[X] and reads subst[X]'s result as X's. prepare uses it to share one
// analysis (FindLinears, Quantize) between the graphs it builds from one base.
func RunPassesWith(g *Graph, config any, logf func(string, ...any), subst map[*Pass]*Pass, passes ...*Pass) (*Context, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	ctx := &Context{G: g, Config: config, Logf: logf, results: map[*Pass]any{}}
	done := map[*Pass]int{} // 1 running its requirements, 2 done
	var run func(p *Pass) error
	run = func(p *Pass) error {
		switch done[p] {
		case 1:
			panic(fmt.Sprintf("pass dependency cycle through %q", p.Name)) // a bug in the pass declarations
		case 2:
			return nil
		}
		done[p] = 1
		for _, r := range p.Requires {
			if err := run(r); err != nil {
				return err
			}
		}
		actual := p
		if s, ok := subst[p]; ok {
			actual = s
		}
		r, err := actual.Run(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
		ctx.results[p] = r
		done[p] = 2
		return nil
	}
	for _, p := range passes {
		if err := run(p); err != nil {
			return ctx, err
		}
	}
	return ctx, nil
}
