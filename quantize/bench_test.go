package quantize

import "testing"

// BenchmarkQuantize is the size of Llama-3.2-3B's MLP projections (3072×8192).
func BenchmarkQuantize(b *testing.B) {
	const n, k = 3072, 8192
	w := gaussian(1, n*k, 0.02)
	for _, c := range []struct {
		name string
		opt  Options
	}{
		{"sym_bs32", Options{}},
		{"asym_bs32", Options{Asymmetric: true}},
		{"sym_bs128", Options{BlockSize: 128}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(n * k * 4))
			for b.Loop() {
				if _, err := Quantize(w, n, k, c.opt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
