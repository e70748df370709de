package ortgraph

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// A Pass is one rewrite (or analysis) of a graph, declared as a value in the style of
// golang.org/x/tools/go/analysis: a name, a one-paragraph Doc, the passes whose results
// it needs, the types of its options and of its result, and Run. Each pass follows
// pattern → check (with a reason on failure) → rewrite, and returns an error instead of
// rewriting half a match.
type Pass struct {
	Name     string
	Doc      string
	Requires []*Pass
	// OptionsType is the type of the options value the caller gives this pass (in Options)
	// and Run reads with OptionsOf; nil for a pass that takes none. Context.Run checks, before
	// any pass runs, that every pass it will run has a value of this type and, where the type
	// has a Validate() error method, that it validates.
	OptionsType reflect.Type
	// ResultType is the type of the result Run returns, which later passes and callers read
	// with ResultOf; nil for a pass whose Run returns nil.
	ResultType reflect.Type
	// Run rewrites ctx.G and returns a result of ResultType.
	Run func(ctx *Context) (any, error)
}

// Options holds the caller's options for the passes that declare an OptionsType, by pass.
// Entries for passes that do not run are ignored (one Options can serve several runs).
type Options map[*Pass]any

// Context is what a pass sees: the graph, the options of the passes and the results of
// the passes it requires.
type Context struct {
	G       *Graph
	Logf    func(format string, args ...any)
	options Options
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
	if want := reflect.TypeFor[T](); p.ResultType != nil && p.ResultType != want {
		panic(fmt.Sprintf("pass %q declares ResultType %v, not the %v its reader expects", p.Name, p.ResultType, want))
	}
	r := ctx.Result(p)
	v, ok := r.(T)
	if !ok {
		panic(fmt.Sprintf("pass %q result is %T, not the %v its reader expects", p.Name, r, reflect.TypeFor[T]()))
	}
	return v
}

// OptionsOf returns the options of the pass whose Run is executing as a T. Context.Run has
// checked that the value given is of the pass's OptionsType before running anything, so a
// T other than that type is a bug in the pass, and it panics naming both types.
func OptionsOf[T any](ctx *Context) T {
	cur := ctx.current
	if cur == nil {
		panic("ortgraph.OptionsOf called outside a pass's Run")
	}
	if want := reflect.TypeFor[T](); cur.OptionsType != want {
		panic(fmt.Sprintf("pass %q reads options of type %v but declares OptionsType %v", cur.Name, want, cur.OptionsType))
	}
	return ctx.options[cur].(T)
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
// order, after validating their declarations and options (Context.Run). Errors are
// wrapped with the failing pass's name.
func RunPasses(g *Graph, opts Options, logf func(string, ...any), passes ...*Pass) (*Context, error) {
	ctx := NewContext(g, opts, logf)
	return ctx, ctx.Run(passes...)
}

// NewContext returns a context for running passes over g with the passes' options opts
// (nil when no pass to run takes options); logf may be nil. Between NewContext and Run a
// caller may Provide results that are already known.
func NewContext(g *Graph, opts Options, logf func(string, ...any)) *Context {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Context{G: g, Logf: logf, options: opts, results: map[*Pass]any{}}
}

// Provide records result as p's, so that p does not run in this context (nor do its
// requirements, unless another pass needs them) and the passes requiring p read result.
// prepare uses it to share one analysis (FindLinears, Quantize) of a base graph between
// the graphs it clones from that base. Providing a pass that already has a result is a bug.
func (c *Context) Provide(p *Pass, result any) {
	if _, ok := c.results[p]; ok {
		panic(fmt.Sprintf("pass %q already has a result", p.Name))
	}
	if err := checkResult(p, result); err != nil {
		panic(err.Error())
	}
	c.results[p] = result
}

// Run validates the given passes and everything they require (Validate), and the options
// of those it will run (those that have neither run nor been provided), then runs them,
// each once, in dependency order. Errors are wrapped with the failing pass's name.
func (c *Context) Run(passes ...*Pass) error {
	if err := Validate(passes...); err != nil {
		return err
	}
	if err := c.checkOptions(passes); err != nil {
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
	if err := checkResult(p, r); err != nil {
		return err
	}
	c.results[p] = r
	return nil
}

// checkResult reports a result that is not of p's declared ResultType (a bug in the pass).
func checkResult(p *Pass, r any) error {
	switch got := reflect.TypeOf(r); {
	case p.ResultType == nil && r != nil:
		return fmt.Errorf("pass %q returned a %v but declares no ResultType", p.Name, got)
	case p.ResultType != nil && got != p.ResultType:
		return fmt.Errorf("pass %q returned a %v, not its ResultType %v", p.Name, got, p.ResultType)
	}
	return nil
}

// checkOptions checks, before anything runs, the options of every pass that Run will run
// (the given passes and their requirements, skipping those with a result already): a pass
// with an OptionsType has a value of exactly that type, valid by its Validate method if it
// has one; a pass without has none. Option errors are wrapped with the pass's name, as
// Run's errors are.
func (c *Context) checkOptions(passes []*Pass) error {
	seen := map[*Pass]bool{}
	var check func(p *Pass) error
	check = func(p *Pass) error {
		if _, done := c.results[p]; done || seen[p] {
			return nil
		}
		seen[p] = true
		for _, r := range p.Requires {
			if err := check(r); err != nil {
				return err
			}
		}
		o, given := c.options[p]
		switch {
		case p.OptionsType == nil && given:
			return fmt.Errorf("pass %q takes no options, but was given a %T", p.Name, o)
		case p.OptionsType == nil:
			return nil
		case !given:
			return fmt.Errorf("pass %q needs options of type %v; none was given", p.Name, p.OptionsType)
		case reflect.TypeOf(o) != p.OptionsType:
			return fmt.Errorf("pass %q takes options of type %v, not %T", p.Name, p.OptionsType, o)
		}
		if v, ok := o.(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return fmt.Errorf("%s: %w", p.Name, err)
			}
		}
		return nil
	}
	for _, p := range passes {
		if err := check(p); err != nil {
			return err
		}
	}
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
