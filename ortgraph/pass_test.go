package ortgraph

import (
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
	count := &Pass{Name: "count", Doc: "returns 3", Run: func(*Context) (any, error) { return 3, nil }}
	other := &Pass{Name: "other", Doc: "returns a string", Run: func(*Context) (any, error) { return "x", nil }}
	var got int
	double := &Pass{Name: "double", Doc: "doubles count", Requires: []*Pass{count}, Run: func(ctx *Context) (any, error) {
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
		{"wrong type", func() { ResultOf[string](ctx, count) }, `pass "count" result is int, not the string its reader expects`},
		{"did not run", func() { ResultOf[int](ctx, &Pass{Name: "never"}) }, `pass "never" result requested but it did not run`},
		{"undeclared", func() {
			sneaky := &Pass{Name: "sneaky", Doc: "reads count without requiring it", Run: func(c *Context) (any, error) { return ResultOf[int](c, count), nil }}
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
		{"duplicate name", []*Pass{ok, {Name: "top", Doc: "d", Run: run, Requires: []*Pass{{Name: "ok", Doc: "another", Run: run}}}}, `pass "ok": two different passes have this name`},
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
		return &Pass{Name: name, Doc: name, Requires: req, Run: func(*Context) (any, error) {
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
