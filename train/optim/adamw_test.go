package optim

import (
	"github.com/ortq/ortq/internal/safetensors"
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestAdamWHandComputed checks three steps against values derived by hand.
// With a constant gradient g the bias-corrected moments are exactly m̂ = g and
// v̂ = g² at every step (a bias-corrected EMA of a constant is that constant),
// so each step is p ← p·(1 − lr·wd) − lr·g/(|g| + eps). For p0 = 1, g = 0.5,
// torch defaults:
//
//	p1 = 1·0.99999 − 0.001·0.5/0.50000001            = 0.99899000002
//	p2 = p1·0.99999 − 0.00099999998                   = 0.9979800100...
//	p3 = p2·0.99999 − 0.00099999998                   = 0.9969700302...
func TestAdamWHandComputed(t *testing.T) {
	tests := []struct {
		name string
		cfg  AdamWConfig
		p0   float32
		g    float32
		want [3]float64
	}{
		{"defaults", DefaultAdamWConfig(), 1, 0.5, [3]float64{0.99899000002, 0.9979800100200002, 0.9969700302199000}},
		{"no decay negative grad", AdamWConfig{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, -2, -3, [3]float64{-1.9, -1.8, -1.7}},
		{"decay only (tiny grad)", AdamWConfig{LR: 0.5, Beta1: 0.9, Beta2: 0.999, Eps: 1e6, WeightDecay: 0.1}, 4, 1e-12, [3]float64{3.8, 3.61, 3.4295}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := []float32{tc.p0}
			opt, err := NewAdamW([]Param{{Name: "p", Data: p}}, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for k := 0; k < 3; k++ {
				if err := opt.Step(map[string][]float32{"p": {tc.g}}, tc.cfg.LR); err != nil {
					t.Fatal(err)
				}
				if rel := math.Abs(float64(p[0])-tc.want[k]) / math.Abs(tc.want[k]); rel > 3e-7 {
					t.Errorf("step %d: p = %.10g, want %.10g (rel %.2g)", k+1, p[0], tc.want[k], rel)
				}
			}
			if opt.StepCount() != 3 {
				t.Errorf("StepCount = %d", opt.StepCount())
			}
		})
	}
}

func TestAdamWNoDecayParam(t *testing.T) {
	a, b := []float32{1}, []float32{1}
	opt, _ := NewAdamW([]Param{{Name: "a", Data: a}, {Name: "b", Data: b, NoDecay: true}}, AdamWConfig{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8,
		WeightDecay: 0.5})
	_ = opt.Step(map[string][]float32{"a": {0}, "b": {0}}, 0.1) // zero grad: only decay moves a
	if a[0] != float32(0.95) || b[0] != 1 {
		t.Errorf("a = %v (want 0.95), b = %v (want 1)", a[0], b[0])
	}
}

func TestAdamWErrorsLeaveStateUntouched(t *testing.T) {
	p := []float32{1, 2}
	opt, err := NewAdamW([]Param{{Name: "w", Data: p}}, DefaultAdamWConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		grads map[string][]float32
		lr    float64
		want  string
	}{
		{map[string][]float32{}, 1e-3, `no gradient for parameter "w"`},
		{map[string][]float32{"w": {1}}, 1e-3, "has 1 elements"},
		{map[string][]float32{"w": {1, 1}, "x": {1}}, 1e-3, `"x" matches no parameter`},
		{map[string][]float32{"w": {1, 1}}, math.NaN(), "invalid learning rate"},
	} {
		if err := opt.Step(tc.grads, tc.lr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Step error %v, want %q", err, tc.want)
		}
	}
	if opt.StepCount() != 0 || p[0] != 1 || p[1] != 2 {
		t.Errorf("failed steps changed state: step %d p %v", opt.StepCount(), p)
	}
	for _, cfg := range []AdamWConfig{{LR: -1, Beta1: 0.9, Beta2: 0.999}, {LR: 1, Beta1: 1, Beta2: 0.999}, {LR: 1, Beta1: 0.9, Beta2: 0.999, Eps: -1}, {LR: 1,
		Beta2: 0.9, WeightDecay: -1}} {
		if _, err := NewAdamW([]Param{{Name: "w", Data: p}}, cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
	if _, err := NewAdamW([]Param{{Name: "w", Data: p}, {Name: "w", Data: p}}, DefaultAdamWConfig()); err == nil {
		t.Error("duplicate names accepted")
	}
}

// TestAdamWStateResume: stepping, saving state through safetensors, loading
// into a fresh optimizer and stepping on gives bit-identical parameters.
func TestAdamWStateResume(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := 50
	grads := make([][]float32, 6)
	for k := range grads {
		grads[k] = make([]float32, n)
		for i := range grads[k] {
			grads[k][i] = float32(r.NormFloat64())
		}
	}
	init := func() []float32 {
		p := make([]float32, n)
		for i := range p {
			p[i] = float32(i) / 10
		}
		return p
	}
	ref := init()
	o1, _ := NewAdamW([]Param{{Name: "w", Data: ref}}, DefaultAdamWConfig())
	for _, g := range grads {
		_ = o1.Step(map[string][]float32{"w": g}, 1e-2)
	}

	p := init()
	o2, _ := NewAdamW([]Param{{Name: "w", Data: p}}, DefaultAdamWConfig())
	for _, g := range grads[:3] {
		_ = o2.Step(map[string][]float32{"w": g}, 1e-2)
	}
	ts, meta := o2.State().Tensors()
	path := t.TempDir() + "/opt.safetensors"
	if err := safetensors.Write(path, ts, meta); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := AdamWStateFromTensors(f.Tensors, f.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	p2 := append([]float32(nil), p...)
	o3, _ := NewAdamW([]Param{{Name: "w", Data: p2}}, DefaultAdamWConfig())
	if err := o3.LoadState(st); err != nil {
		t.Fatal(err)
	}
	for _, g := range grads[3:] {
		_ = o3.Step(map[string][]float32{"w": g}, 1e-2)
	}
	for i := range ref {
		if math.Float32bits(ref[i]) != math.Float32bits(p2[i]) {
			t.Fatalf("resumed p[%d] = %v, uninterrupted %v", i, p2[i], ref[i])
		}
	}
	bad := AdamWState{Step: 1, ExpAvg: map[string][]float32{"v": make([]float32, n)}, ExpAvgSq: map[string][]float32{"v": make([]float32, n)}}
	if err := o3.LoadState(bad); err == nil || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("LoadState of other parameters: %v", err)
	}
}

// TestFMA32 compares fma32 with a single correctly rounded float32 result
// from math/big, including constructed double-rounding cases.
func TestFMA32(t *testing.T) {
	ref := func(a, b, c float32) float32 {
		x := new(big.Float).SetPrec(200).SetFloat64(float64(a))
		x.Mul(x, new(big.Float).SetFloat64(float64(b)))
		x.Add(x, new(big.Float).SetFloat64(float64(c)))
		f, _ := x.Float32() // ToNearestEven, single rounding
		return f
	}
	r := rand.New(rand.NewPCG(3, 4))
	cases := [][3]float32{
		// a·b = 1 + 2^-24 (a float32 midpoint) plus a tiny c that must
		// break the tie upward; a float64 sum rounds c away first.
		{1 + 0x1p-23, 1 + 0x1p-23, 0x1p-70},
		{1 + 0x1p-23, 1 - 0x1p-24, -0x1p-80},
		{0.1, 10, -1},
	}
	for i := 0; i < 200000; i++ {
		a := float32(r.NormFloat64())
		b := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(20)-10)))
		c := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(60)-30)))
		cases = append(cases, [3]float32{a, b, c})
	}
	bad := 0
	for _, tc := range cases {
		if got, want := fma32(tc[0], tc[1], tc[2]), ref(tc[0], tc[1], tc[2]); math.Float32bits(got) != math.Float32bits(want) {
			if bad++; bad < 5 {
				t.Errorf("fma32(%g, %g, %g) = %g, want %g", tc[0], tc[1], tc[2], got, want)
			}
		}
	}
}

func TestPowInt(t *testing.T) {
	// Python: 0.9**3 == 0.7290000000000001, 0.999**2 == 0.998001, 0.8**2 == 0.6400000000000001
	for _, tc := range []struct {
		b    float64
		n    int64
		want float64
	}{{0.9, 1, 0.9}, {0.9, 3, 0.7290000000000001}, {0.999, 2, 0.998001}, {0.8, 2, 0.6400000000000001}, {0.5, 10, 1.0 / 1024}, {0.9, 0, 1}} {
		if got := powInt(tc.b, tc.n); got != tc.want {
			t.Errorf("powInt(%v, %d) = %v, want %v", tc.b, tc.n, got, tc.want)
		}
	}
}
