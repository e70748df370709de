package generate

import (
	"math"
	"strings"
	"testing"
)

// TestSampler: greedy is the first argmax; top-k 1 and a tiny top-p are greedy too; a
// seed gives one sequence; the draws follow softmax(logits/T) over the kept tokens (checked
// against the probabilities computed here in float64 from the definition).
func TestSampler(t *testing.T) {
	logits := []float32{1, 3, 3, 0.5, 2, -1}
	for _, c := range []struct {
		name     string
		temp     float64
		topK     int
		topP     float64
		wantOnly int // -1: several tokens expected
	}{
		{"greedy", 0, 0, 1, 1},
		{"top-k 1", 1, 1, 1, 1},
		{"tiny top-p", 1, 0, 1e-6, 1},
		{"sampling", 1, 0, 1, -1},
	} {
		s, err := NewSampler(c.temp, c.topK, c.topP, 7)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]int{}
		for i := 0; i < 2000; i++ {
			seen[s.Next(logits)]++
		}
		if c.wantOnly >= 0 && (len(seen) != 1 || seen[c.wantOnly] != 2000) {
			t.Errorf("%s: drew %v, want only %d", c.name, seen, c.wantOnly)
		}
		if c.wantOnly < 0 {
			var z float64
			for _, l := range logits {
				z += math.Exp(float64(l))
			}
			for id, l := range logits {
				p, got := math.Exp(float64(l))/z, float64(seen[id])/2000
				if math.Abs(p-got) > 0.04 {
					t.Errorf("%s: token %d drawn %.3f of the time, softmax %.3f", c.name, id, got, p)
				}
			}
		}
	}
}

// TestSamplerTopKTopP: only the k most likely, then only the top-p mass, are ever drawn.
func TestSamplerTopKTopP(t *testing.T) {
	logits := []float32{0, 5, 4, 3, 2, 1}
	for _, c := range []struct {
		topK    int
		topP    float64
		allowed map[int]bool
	}{
		{2, 1, map[int]bool{1: true, 2: true}},
		// softmax: 0.636, 0.234, 0.086, ...: p = 0.8 keeps ids 1 and 2.
		{0, 0.8, map[int]bool{1: true, 2: true}},
		{3, 0.5, map[int]bool{1: true}},
	} {
		s, err := NewSampler(1, c.topK, c.topP, 1)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 500; i++ {
			if id := s.Next(logits); !c.allowed[id] {
				t.Fatalf("top-k %d top-p %g: drew %d, allowed %v", c.topK, c.topP, id, c.allowed)
			}
		}
	}
}

// TestSamplerSeeded: the same seed gives the same draws, another seed others.
func TestSamplerSeeded(t *testing.T) {
	logits := make([]float32, 50)
	for i := range logits {
		logits[i] = float32(i%7) * 0.3
	}
	draw := func(seed uint64) []int {
		s, _ := NewSampler(0.9, 20, 0.9, seed)
		var out []int
		for i := 0; i < 30; i++ {
			out = append(out, s.Next(logits))
		}
		return out
	}
	a, b, c := draw(3), draw(3), draw(4)
	same := func(x, y []int) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) || same(a, c) {
		t.Errorf("seed 3: %v and %v; seed 4: %v", a, b, c)
	}
}

// TestSamplerBadOptions: out-of-range options are refused naming the flag.
func TestSamplerBadOptions(t *testing.T) {
	for _, c := range []struct {
		temp float64
		k    int
		p    float64
		flag string
	}{{-1, 0, 1, "--temperature"}, {math.NaN(), 0, 1, "--temperature"}, {1, -2, 1, "--top-k"}, {1, 0, 0, "--top-p"}, {1, 0, 1.5, "--top-p"}} {
		if _, err := NewSampler(c.temp, c.k, c.p, 1); err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%+v: error %v does not name %s", c, err, c.flag)
		}
	}
}
