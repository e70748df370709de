package ortgraph

import "fmt"

// A Pass is one rewrite (or analysis) of a graph, declared as a value in the style of
// golang.org/x/tools/go/analysis: a name, a one-paragraph Doc, the passes whose results
// it needs, and Run. Each pass follows pattern → check (with a reason on failure) →
// rewrite, and returns an error instead of rewriting half a match.
type Pass struct {
	Name     string
	Doc      string
	Requires []*Pass
	// Run rewrites ctx.G and may return a result that later passes read with ResultOf.
	Run func(ctx *Context) (any, error)
}

// Context is what a pass sees: the graph, the caller's configuration and the results of
// the passes it requires.
type Context struct {
	G       *Graph
	Config  any
	Logf    func(format string, args ...any)
	results map[*Pass]any
	// current is the pass whose Run is executing (nil between passes): ResultOf checks
	// that it declared the pass it reads in its Requires.
	current *Pass
	subst   map[*Pass]*Pass
	running map[*Pass]bool
}

// ResultOf returns the result of pass p as a T. Inside a pass's Run, p must be one of
// that pass's Requires; outside (a caller reading results after RunPasses), p must have
// run or been provided. A result of another type, or of a pass that did not run, is a
// bug in the pass declarations, not in the input graph, so it panics naming both passes
// and types instead of returning an error.
func ResultOf[T any](ctx *Context, p *Pass) T {
	if cur := ctx.current; cur != nil && !requires(cur, p) {
		panic(fmt.Sprintf("pass %q reads the result of %q, which is not in its Requires", cur.Name, p.Name))
	}
	r := ctx.Result(p)
	v, ok := r.(T)
	if !ok {
		var want T
		panic(fmt.Sprintf("pass %q result is %T, not the %T its reader expects", p.Name, r, want))
	}
	return v
}

func requires(p, dep *Pass) bool {
	for _, r := range p.Requires {
		if r == dep {
			return true
		}
	}
	return false
}

// Result returns the result of a pass that already ran or was provided, untyped;
// ResultOf is the checked form. Asking for one that did not run is a bug in the pass's
// Requires list.
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
	ctx := NewContext(g, config, logf)
	ctx.subst = subst
	return ctx, ctx.Run(passes...)
}

// NewContext returns a context for running passes over g with config; logf may be nil.
func NewContext(g *Graph, config any, logf func(string, ...any)) *Context {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Context{G: g, Config: config, Logf: logf, results: map[*Pass]any{}, running: map[*Pass]bool{}}
}

// Run runs the given passes and everything they require that has neither run nor been
// provided, each once, in dependency order. Errors are wrapped with the failing pass's name.
func (c *Context) Run(passes ...*Pass) error {
	for _, p := range passes {
		if err := c.run(p); err != nil {
			return err
		}
	}
	return nil
}

func (c *Context) run(p *Pass) error {
	if _, done := c.results[p]; done {
		return nil
	}
	if c.running[p] {
		panic(fmt.Sprintf("pass dependency cycle through %q", p.Name)) // a bug in the pass declarations
	}
	c.running[p] = true
	for _, r := range p.Requires {
		if err := c.run(r); err != nil {
			return err
		}
	}
	actual := p
	if s, ok := c.subst[p]; ok {
		actual = s
	}
	c.current = p
	r, err := actual.Run(c)
	c.current = nil
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	c.results[p] = r
	return nil
}
