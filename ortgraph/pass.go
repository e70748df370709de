package ortgraph

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

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
}

// ResultOf returns the result of pass p as a T. Inside a pass's Run, p must be one of
// that pass's Requires; outside (a caller reading results after RunPasses), p must have
// run or been provided. A result of another type, or of a pass that did not run, is a
// bug in the pass declarations, not in the input graph, so it panics naming both passes
// and types instead of returning an error.
func ResultOf[T any](ctx *Context, p *Pass) T {
	if cur := ctx.current; cur != nil && !slices.Contains(cur.Requires, p) {
		panic(fmt.Sprintf("pass %q reads the result of %q, which is not in its Requires", cur.Name, p.Name))
	}
	r := ctx.Result(p)
	v, ok := r.(T)
	if !ok {
		panic(fmt.Sprintf("pass %q result is %T, not the %v its reader expects", p.Name, r, reflect.TypeFor[T]()))
	}
	return v
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
// order, after validating their declarations (Validate). Errors are wrapped with the
// failing pass's name.
func RunPasses(g *Graph, config any, logf func(string, ...any), passes ...*Pass) (*Context, error) {
	ctx := NewContext(g, config, logf)
	return ctx, ctx.Run(passes...)
}

// NewContext returns a context for running passes over g with config; logf may be nil.
// Between NewContext and Run a caller may Provide results that are already known.
func NewContext(g *Graph, config any, logf func(string, ...any)) *Context {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Context{G: g, Config: config, Logf: logf, results: map[*Pass]any{}}
}

// Provide records result as p's, so that p does not run in this context (nor do its
// requirements, unless another pass needs them) and the passes requiring p read result.
// prepare uses it to share one analysis (FindLinears, Quantize) of a base graph between
// the graphs it clones from that base. Providing a pass that already has a result is a bug.
func (c *Context) Provide(p *Pass, result any) {
	if _, ok := c.results[p]; ok {
		panic(fmt.Sprintf("pass %q already has a result", p.Name))
	}
	c.results[p] = result
}

// Run validates the given passes and everything they require (Validate), then runs those
// that have neither run nor been provided, each once, in dependency order. Errors are
// wrapped with the failing pass's name.
func (c *Context) Run(passes ...*Pass) error {
	if err := Validate(passes...); err != nil {
		return err
	}
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
	for _, r := range p.Requires {
		if err := c.run(r); err != nil {
			return err
		}
	}
	c.current = p
	r, err := p.Run(c)
	c.current = nil
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	c.results[p] = r
	return nil
}

// Validate checks the declarations of the given passes and of everything they require,
// provided or not: every pass has a Name, a Doc and a Run, no two passes share a name, and
// Requires has no cycle. The error names the pass at fault (an unnamed pass by the pass
// that requires it), so a broken declaration fails before any graph is rewritten.
func Validate(passes ...*Pass) error {
	const (
		visiting = 1
		done     = 2
	)
	state := map[*Pass]int{}
	byName := map[string]*Pass{}
	var path []string
	var visit func(p *Pass, by string) error
	visit = func(p *Pass, by string) error {
		switch {
		case p == nil:
			return fmt.Errorf("pass %s is nil", by)
		case state[p] == done:
			return nil
		case state[p] == visiting:
			cycle := path[slices.Index(path, p.Name):]
			return fmt.Errorf("pass %q: Requires cycle %s → %s", p.Name, strings.Join(cycle, " → "), p.Name)
		case p.Name == "":
			return fmt.Errorf("pass %s has no Name", by)
		case strings.TrimSpace(p.Doc) == "":
			return fmt.Errorf("pass %q has no Doc", p.Name)
		case p.Run == nil:
			return fmt.Errorf("pass %q has no Run", p.Name)
		case byName[p.Name] != nil && byName[p.Name] != p:
			return fmt.Errorf("pass %q: two different passes have this name", p.Name)
		}
		byName[p.Name] = p
		state[p] = visiting
		path = append(path, p.Name)
		for _, r := range p.Requires {
			if err := visit(r, fmt.Sprintf("required by %q", p.Name)); err != nil {
				return err
			}
		}
		path = path[:len(path)-1]
		state[p] = done
		return nil
	}
	for i, p := range passes {
		if err := visit(p, fmt.Sprintf("#%d of the list", i+1)); err != nil {
			return err
		}
	}
	return nil
}
