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
