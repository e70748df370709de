package ortgraph

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// mustPanic runs f and returns its panic message, failing the test when f returns.
func mustPanic(t *testing.T, f func()) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("no panic")
		}
		msg, _ = r.(string)
	}()
	f()
	return ""
}

func TestResultOf(t *testing.T) {
	intType, stringType := reflect.TypeFor[int](), reflect.TypeFor[string]()
	count := &Pass{Name: "count", Doc: "returns 3", ResultType: intType, Run: func(*Context) (any, error) { return 3, nil }}
	other := &Pass{Name: "other", Doc: "returns a string", ResultType: stringType, Run: func(*Context) (any, error) { return "x", nil }}
	var got int
	double := &Pass{Name: "double", Doc: "doubles count", Requires: []*Pass{count}, ResultType: intType, Run: func(ctx *Context) (any, error) {
		got = 2 * ResultOf[int](ctx, count)
		return got, nil
	}}
	ctx, err := RunPasses(nil, nil, nil, double, other)
	if err != nil {
		t.Fatal(err)
	}
	if got != 6 || ResultOf[int](ctx, double) != 6 || ResultOf[string](ctx, other) != "x" {
		t.Fatalf("results: double=%d", got)
	}
	for _, c := range []struct {
		name string
		f    func()
		want string
	}{
		{"wrong type", func() { ResultOf[string](ctx, count) }, `pass "count" declares ResultType int, not the string its reader expects`},
		{"wrong undeclared type", func() {
			untyped := &Pass{Name: "untyped", Doc: "returns nothing", Run: func(*Context) (any, error) { return nil, nil }}
			ctx.Run(untyped)
			ResultOf[string](ctx, untyped)
		}, `pass "untyped" result is <nil>, not the string its reader expects`},
		{"provided of another type", func() { NewContext(nil, nil, nil).Provide(count, "3") }, `pass "count" returned a string, not its ResultType int`},
		{"did not run", func() { ResultOf[int](ctx, &Pass{Name: "never"}) }, `pass "never" result requested but it did not run`},
		{"undeclared", func() {
			sneaky := &Pass{Name: "sneaky", Doc: "reads count without requiring it", ResultType: intType,
				Run: func(c *Context) (any, error) { return ResultOf[int](c, count), nil }}
			ctx.Run(sneaky)
		}, `pass "sneaky" reads the result of "count", which is not in its Requires`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if msg := mustPanic(t, c.f); !strings.Contains(msg, c.want) {
				t.Errorf("panic %q, want %q", msg, c.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	run := func(*Context) (any, error) { return nil, nil }
	ok := &Pass{Name: "ok", Doc: "fine", Run: run}
	cyc1 := &Pass{Name: "cyc1", Doc: "part of a cycle", Run: run}
	cyc2 := &Pass{Name: "cyc2", Doc: "part of a cycle", Run: run, Requires: []*Pass{cyc1}}
	cyc1.Requires = []*Pass{ok, cyc2}
	for _, c := range []struct {
		name   string
		passes []*Pass
		want   string
	}{
		{"fine", []*Pass{ok, {Name: "b", Doc: "needs ok", Run: run, Requires: []*Pass{ok}}}, ""},
		{"no name", []*Pass{{Name: "top", Doc: "d", Run: run, Requires: []*Pass{{Doc: "d", Run: run}}}}, `pass required by "top" has no Name`},
		{"no doc", []*Pass{{Name: "top", Doc: " ", Run: run}}, `pass "top" has no Doc`},
		{"no run", []*Pass{{Name: "top", Doc: "d"}}, `pass "top" has no Run`},
		{"nil requirement", []*Pass{{Name: "top", Doc: "d", Run: run, Requires: []*Pass{nil}}}, `pass required by "top" is nil`},
		{"duplicate name", []*Pass{ok, {Name: "top", Doc: "d", Run: run, Requires: []*Pass{{Name: "ok", Doc: "another", Run: run}}}},
			`pass "ok": two different passes have this name`},
		{"cycle", []*Pass{{Name: "top", Doc: "d", Run: run, Requires: []*Pass{cyc1}}}, `pass "cyc1": Requires cycle cyc1 → cyc2 → cyc1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(c.passes...)
			switch {
			case c.want == "" && err != nil:
				t.Fatal(err)
			case c.want != "" && (err == nil || err.Error() != c.want):
				t.Fatalf("error %v, want %q", err, c.want)
			}
			// RunPasses refuses the same set before running anything.
			ran := false
			top := &Pass{Name: "probe", Doc: "records that it ran", Run: func(*Context) (any, error) { ran = true; return nil, nil }}
			_, err = RunPasses(nil, nil, nil, append([]*Pass{top}, c.passes...)...)
			if c.want != "" && (err == nil || ran) {
				t.Fatalf("RunPasses: error %v, ran %v; want the validation error before any pass runs", err, ran)
			}
		})
	}
}

// TestProvide: a provided result is what the passes requiring it read, and neither the
// provided pass nor its own requirements run.
func TestProvide(t *testing.T) {
	var ran []string
	pass := func(name string, req ...*Pass) *Pass {
		return &Pass{Name: name, Doc: name, Requires: req, ResultType: reflect.TypeFor[string](), Run: func(*Context) (any, error) {
			ran = append(ran, name)
			return name + " ran", nil
		}}
	}
	base := pass("base")
	analysis := pass("analysis", base)
	var got string
	user := &Pass{Name: "user", Doc: "reads analysis", Requires: []*Pass{analysis}, Run: func(ctx *Context) (any, error) {
		got = ResultOf[string](ctx, analysis)
		return nil, nil
	}}
	ctx := NewContext(nil, nil, nil)
	ctx.Provide(analysis, "provided")
	if err := ctx.Run(user); err != nil {
		t.Fatal(err)
	}
	if got != "provided" || len(ran) != 0 {
		t.Fatalf("user read %q, passes run %v; want the provided value and none run", got, ran)
	}
	if msg := mustPanic(t, func() { ctx.Provide(analysis, "again") }); !strings.Contains(msg, `pass "analysis" already has a result`) {
		t.Fatalf("second Provide: %q", msg)
	}
}

// TestResultType: a Run that returns something other than its declared ResultType fails
// with an error naming the pass and both types, and its result is not recorded.
func TestResultType(t *testing.T) {
	for _, c := range []struct {
		name string
		pass *Pass
		want string
	}{
		{"undeclared", &Pass{Name: "p", Doc: "d", Run: func(*Context) (any, error) { return 1, nil }},
			`pass "p" returned a int but declares no ResultType`},
		{"other type", &Pass{Name: "p", Doc: "d", ResultType: reflect.TypeFor[*int](), Run: func(*Context) (any, error) { return 1, nil }},
			`pass "p" returned a int, not its ResultType *int`},
		{"untyped nil", &Pass{Name: "p", Doc: "d", ResultType: reflect.TypeFor[*int](), Run: func(*Context) (any, error) { return nil, nil }},
			`pass "p" returned a <nil>, not its ResultType *int`},
		{"typed nil", &Pass{Name: "p", Doc: "d", ResultType: reflect.TypeFor[*int](), Run: func(*Context) (any, error) { return (*int)(nil), nil }}, ""},
		{"none", &Pass{Name: "p", Doc: "d", Run: func(*Context) (any, error) { return nil, nil }}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, err := RunPasses(nil, nil, nil, c.pass)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != c.want {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			if _, ok := ctx.results[c.pass]; ok {
				t.Error("the result of the wrong type was recorded")
			}
		})
	}
}

// testOptions are the options of TestOptions' pass; N must be positive.
type testOptions struct{ N int }

func (o testOptions) Validate() error {
	if o.N <= 0 {
		return fmt.Errorf("N %d: must be positive", o.N)
	}
	return nil
}

// TestOptions: Run checks the options of every pass it will run (its requirements
// included, provided passes not) before any pass runs, and a pass reads its own with
// OptionsOf.
func TestOptions(t *testing.T) {
	var ran []string
	var read int
	withOpts := &Pass{Name: "with", Doc: "reads N", OptionsType: reflect.TypeFor[testOptions](), Run: func(ctx *Context) (any, error) {
		ran = append(ran, "with")
		read = OptionsOf[testOptions](ctx).N
		return nil, nil
	}}
	plain := &Pass{Name: "plain", Doc: "takes no options", Run: func(*Context) (any, error) { ran = append(ran, "plain"); return nil, nil }}
	// user runs first in its list but requires withOpts: a bad option must stop plain too.
	user := &Pass{Name: "user", Doc: "requires with", Requires: []*Pass{withOpts}, Run: func(*Context) (any, error) { return nil, nil }}
	for _, c := range []struct {
		name    string
		opts    Options
		provide bool // give withOpts a result, so that its options are not needed
		want    string
	}{
		{"fine", Options{withOpts: testOptions{N: 3}}, false, ""},
		{"provided needs none", nil, true, ""},
		{"missing", nil, false, `pass "with" needs options of type ortgraph.testOptions; none was given`},
		{"pointer", Options{withOpts: &testOptions{N: 3}}, false, `pass "with" takes options of type ortgraph.testOptions, not *ortgraph.testOptions`},
		{"invalid", Options{withOpts: testOptions{}}, false, `with: N 0: must be positive`},
		{"not taken", Options{withOpts: testOptions{N: 1}, plain: testOptions{N: 1}}, false, `pass "plain" takes no options, but was given a ortgraph.testOptions`},
	} {
		t.Run(c.name, func(t *testing.T) {
			ran, read = nil, 0
			ctx := NewContext(nil, c.opts, nil)
			if c.provide {
				ctx.Provide(withOpts, nil)
			}
			err := ctx.Run(plain, user)
			switch {
			case c.want == "" && err != nil:
				t.Fatal(err)
			case c.want != "" && (err == nil || err.Error() != c.want):
				t.Fatalf("error %v, want %q", err, c.want)
			case c.want != "" && len(ran) > 0:
				t.Fatalf("passes %v ran before the options error", ran)
			case c.want == "" && !c.provide && read != 3:
				t.Fatalf("with read N=%d, want 3", read)
			}
		})
	}
	wrong := &Pass{Name: "wrong", Doc: "reads another type", OptionsType: reflect.TypeFor[testOptions](), Run: func(ctx *Context) (any, error) {
		OptionsOf[int](ctx)
		return nil, nil
	}}
	msg := mustPanic(t, func() { RunPasses(nil, Options{wrong: testOptions{N: 1}}, nil, wrong) })
	if want := `pass "wrong" reads options of type int but declares OptionsType ortgraph.testOptions`; msg != want {
		t.Errorf("panic %q, want %q", msg, want)
	}
}
