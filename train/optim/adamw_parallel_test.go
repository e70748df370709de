package optim

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestAdamWParallelIsSequential: AdamW.Step spread over the cores gives, bit for bit, the
// sequential step's weights and moments (each element's update depends only on itself).
func TestAdamWParallelIsSequential(t *testing.T) {
	mk := func() ([]Param, map[string][]float32) {
		r := rand.New(rand.NewPCG(5, 6))
		var ps []Param
		grads := map[string][]float32{}
		for i := range 37 {
			n := 1 + r.IntN(5000)
			p := Param{Name: fmt.Sprint("p", i), Data: make([]float32, n), NoDecay: i%5 == 0}
			g := make([]float32, n)
			for j := range p.Data {
				p.Data[j], g[j] = float32(r.NormFloat64()), float32(r.NormFloat64())*1e-2
			}
			ps, grads[p.Name] = append(ps, p), g
		}
		return ps, grads
	}
	run := func(minN int) []Param {
		saved := parallelAdamWMin
		parallelAdamWMin = minN
		defer func() { parallelAdamWMin = saved }()
		ps, grads := mk()
		o, err := NewAdamW(ps, DefaultAdamWConfig())
		if err != nil {
			t.Fatal(err)
		}
		for step := range 3 {
			if err := o.Step(grads, 1e-3*float64(step+1)); err != nil {
				t.Fatal(err)
			}
		}
		return ps
	}
	seq, par := run(1<<62), run(1)
	for i := range seq {
		for j := range seq[i].Data {
			if seq[i].Data[j] != par[i].Data[j] {
				t.Fatalf("%s[%d]: %v sequential, %v parallel", seq[i].Name, j, seq[i].Data[j], par[i].Data[j])
			}
		}
	}
}

// BenchmarkAdamWStep is one AdamW step over the 3B shape's q/v r=8 adapter (112 tensors,
// 2.29 M values), on all cores.
func BenchmarkAdamWStep(b *testing.B) {
	var ps []Param
	grads := map[string][]float32{}
	for i := range 112 {
		n := []int{24576, 24576, 24576, 8192}[i%4]
		p := Param{Name: fmt.Sprint("p", i), Data: make([]float32, n)}
		ps, grads[p.Name] = append(ps, p), make([]float32, n)
	}
	o, err := NewAdamW(ps, DefaultAdamWConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := o.Step(grads, 1e-4); err != nil {
			b.Fatal(err)
		}
	}
}
