package quantize

import (
	"bytes"
	"fmt"
	"github.com/ortq/ortq/internal/half"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func gaussian(seed uint64, n int, std float64) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64() * std)
	}
	return w
}

func TestValidate(t *testing.T) {
	tests := []struct {
		opt     Options
		wantErr []string // substrings; nil means valid
	}{
		{Options{}, nil},
		{Options{Bits: 4, BlockSize: 16}, nil},
		{Options{Bits: 4, BlockSize: 256, Asymmetric: true}, nil},
		{Options{BlockSize: 128}, nil},
		{Options{Bits: 8}, []string{"Options.Bits", "8", "allowed value is 4"}},
		{Options{Bits: -4}, []string{"Options.Bits"}},
		{Options{BlockSize: 48}, []string{"Options.BlockSize", "48", "power of two", "16..256"}},
		{Options{BlockSize: 8}, []string{"Options.BlockSize", "16..256"}},
		{Options{BlockSize: 512}, []string{"Options.BlockSize", "16..256"}},
		{Options{BlockSize: -32}, []string{"Options.BlockSize"}},
	}
	for _, tt := range tests {
		err := tt.opt.Validate()
		if tt.wantErr == nil {
			if err != nil {
				t.Errorf("%+v: unexpected error %v", tt.opt, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%+v: no error", tt.opt)
			continue
		}
		for _, s := range tt.wantErr {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%+v: error %q lacks %q", tt.opt, err, s)
			}
		}
	}
}

func TestQuantizeErrors(t *testing.T) {
	nan := make([]float32, 3*40)
	nan[2*40+33] = float32(math.NaN())
	inf := make([]float32, 3*40)
	inf[5] = float32(math.Inf(-1))
	big := gaussian(1, 64*2048, 1)
	big[40*2048+7] = float32(math.Inf(1)) // parallel path
	big[50*2048+9] = float32(math.NaN())
	tests := []struct {
		name    string
		w       []float32
		n, k    int
		opt     Options
		wantErr string
	}{
		{"bad options", make([]float32, 32), 1, 32, Options{BlockSize: 24}, "Options.BlockSize"},
		{"zero rows", nil, 0, 32, Options{}, "[0, 32]"},
		{"negative k", nil, 2, -1, Options{}, "must be positive"},
		{"length mismatch", make([]float32, 10), 3, 4, Options{}, "10 elements, shape [3, 4] needs 12"},
		{"nan", nan, 3, 40, Options{}, "weight[2, 33] = NaN"},
		{"inf asym", inf, 3, 40, Options{Asymmetric: true}, "weight[0, 5] = -Inf"},
		{"first bad of parallel rows", big, 64, 2048, Options{}, "weight[40, 7] = +Inf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Quantize(tt.w, tt.n, tt.k, tt.opt)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestPackingLayout checks bytes on hand-made examples: nibble order, negative scales,
// padding, and both zero-point layouts with an odd block count.
func TestPackingLayout(t *testing.T) {
	t.Run("codes 0..15 low nibble first", func(t *testing.T) {
		w := make([]float32, 16)
		for i := range w {
			w[i] = float32(i - 8) // extreme −8 is negative: scale +1, code = i
		}
		p := mustQuantize(t, w, 1, 16, Options{BlockSize: 16})
		want := []byte{0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe}
		if !bytes.Equal(p.Data, want) || !slices.Equal(p.Scales, []float32{1}) || p.ZeroPoints != nil {
			t.Fatalf("Data % x Scales %v ZP %v; want % x [1] nil", p.Data, p.Scales, p.ZeroPoints, want)
		}
		if got := p.ZeroPointsUINT4(); !bytes.Equal(got, []byte{0x08}) {
			t.Fatalf("ZeroPointsUINT4 % x, want 08", got)
		}
		if d := p.Dequantize(); !slices.Equal(d, w) {
			t.Fatalf("Dequantize %v", d)
		}
	})
	t.Run("positive extreme gives negative scale", func(t *testing.T) {
		w := make([]float32, 16)
		w[0], w[1], w[2] = 8, -7, 1 // codes 8/−1+8=0, −7/−1+8=15, 1/−1+8=7, zeros 8
		p := mustQuantize(t, w, 1, 16, Options{BlockSize: 16})
		want := []byte{0xf0, 0x87, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88}
		if !bytes.Equal(p.Data, want) || !slices.Equal(p.Scales, []float32{-1}) {
			t.Fatalf("Data % x Scales %v; want % x [-1]", p.Data, p.Scales, want)
		}
		if d := p.Dequantize(); !slices.Equal(d, w) {
			t.Fatalf("Dequantize %v", d)
		}
	})
	t.Run("odd K is padded with zero-point codes", func(t *testing.T) {
		// 2 rows, K = 17: blocks of 16 → 2 blocks, 16 codes of padding a row.
		w := make([]float32, 2*17)
		for i := range w {
			w[i] = float32(i%17) - 8
		}
		w[17+16] = 4 // row 1's last block: extreme +4, scale −0.5, code 4/−0.5+8 = 0
		p := mustQuantize(t, w, 2, 17, Options{BlockSize: 16})
		if p.Blocks != 2 || len(p.Data) != 2*2*8 || len(p.Scales) != 4 {
			t.Fatalf("Blocks %d len(Data) %d len(Scales) %d", p.Blocks, len(p.Data), len(p.Scales))
		}
		// row 0's second block is the lone 8 (extreme +8: scale −1, code 0), row 1's the lone 4
		wantRow := []byte{0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x80, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88}
		if !bytes.Equal(p.Data[:16], wantRow) {
			t.Fatalf("row 0 % x, want % x", p.Data[:16], wantRow)
		}
		if !bytes.Equal(p.Data[16:], wantRow) {
			t.Fatalf("row 1 % x, want % x", p.Data[16:], wantRow)
		}
		if want := []float32{1, -1, 1, -0.5}; !slices.Equal(p.Scales, want) {
			t.Fatalf("Scales %v want %v", p.Scales, want)
		}
		if d := p.Dequantize(); !slices.Equal(d, w) {
			t.Fatalf("Dequantize %v\nwant %v", d, w)
		}
	})
	t.Run("asymmetric zero points, odd block count", func(t *testing.T) {
		// Two rows of three blocks; block (lo, hi) = (−zp, 15−zp) with scale 1.
		zps := [][]int{{3, 0, 15}, {5, 9, 1}}
		const bs = 16
		w := make([]float32, 2*3*bs)
		for r, row := range zps {
			for b, zp := range row {
				blk := w[(r*3+b)*bs : (r*3+b+1)*bs]
				for i := range blk {
					blk[i] = float32(i - zp) // codes 0..15
				}
			}
		}
		p := mustQuantize(t, w, 2, 3*bs, Options{BlockSize: bs, Asymmetric: true})
		if want := []byte{0x03, 0x0f, 0x95, 0x01}; !bytes.Equal(p.ZeroPoints, want) {
			t.Fatalf("ZeroPoints % x, want % x (MatMulNBits rows padded to bytes)", p.ZeroPoints, want)
		}
		if want := []byte{0x03, 0x5f, 0x19}; !bytes.Equal(p.ZeroPointsUINT4(), want) {
			t.Fatalf("ZeroPointsUINT4 % x, want % x (flat UINT4)", p.ZeroPointsUINT4(), want)
		}
		for i, s := range p.Scales {
			if s != 1 {
				t.Fatalf("scale %d = %v, want 1", i, s)
			}
		}
		for i := 0; i < len(p.Data); i += 8 {
			if want := []byte{0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe}; !bytes.Equal(p.Data[i:i+8], want) {
				t.Fatalf("block at byte %d: % x", i, p.Data[i:i+8])
			}
		}
		if d := p.Dequantize(); !slices.Equal(d, w) {
			t.Fatal("Dequantize differs")
		}
	})
	t.Run("asymmetric padding is the block zero point", func(t *testing.T) {
		w := []float32{-2, -1, 0, 13} // K = 4 < block 16: scale 1, zp 2, 12 padding codes of 2
		p := mustQuantize(t, w, 1, 4, Options{BlockSize: 16, Asymmetric: true})
		want := []byte{0x10, 0xf2, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22}
		if !bytes.Equal(p.Data, want) || !bytes.Equal(p.ZeroPoints, []byte{0x02}) {
			t.Fatalf("Data % x ZP % x; want % x 02", p.Data, p.ZeroPoints, want)
		}
	})
}

func mustQuantize(t testing.TB, w []float32, n, k int, opt Options) *Packed {
	t.Helper()
	p, err := Quantize(w, n, k, opt)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRoundTrip: every element dequantizes within |scale|/2 of the weight when it lies in the
// block's representable range [(0−zp)·s, (15−zp)·s]; outside it the code saturates, the result
// is the nearest end of the range, and the error stays within |scale| (symmetric signed-range
// clamping, the opposite side of the extreme) or |scale|/2 (asymmetric: zero-point rounding).
func TestRoundTrip(t *testing.T) {
	type gen struct {
		name string
		fn   func(n, k int) []float32
	}
	gens := []gen{
		{"gaussian", func(n, k int) []float32 { return gaussian(uint64(n*k), n*k, 0.02) }},
		{"uniform", func(n, k int) []float32 {
			r := rand.New(rand.NewPCG(uint64(k), 3))
			w := make([]float32, n*k)
			for i := range w {
				w[i] = float32(r.Float64()*2 - 1)
			}
			return w
		}},
		{"outliers and zero rows", func(n, k int) []float32 {
			w := gaussian(9, n*k, 1)
			for i := 0; i < len(w); i += 37 {
				w[i] *= 50
			}
			for c := range k {
				w[c] = 0 // row 0 all zero
				if n > 1 {
					w[k+c] = 0.75 // row 1 constant positive
				}
			}
			return w
		}},
	}
	shapes := [][2]int{{1, 16}, {3, 32}, {7, 100}, {2, 257}, {64, 1024}}
	for _, g := range gens {
		for _, sh := range shapes {
			for _, bs := range []int{16, 32, 64, 128, 256} {
				for _, asym := range []bool{false, true} {
					n, k := sh[0], sh[1]
					w := g.fn(n, k)
					p := mustQuantize(t, w, n, k, Options{BlockSize: bs, Asymmetric: asym})
					checkRoundTrip(t, g.name, w, p)
				}
			}
		}
	}
}

func checkRoundTrip(t *testing.T, name string, w []float32, p *Packed) {
	t.Helper()
	d := p.Dequantize()
	asym := p.ZeroPoints != nil
	for r := range p.N {
		for c := range p.Blocks * p.BlockSize {
			b := c / p.BlockSize
			s := float64(p.Scales[r*p.Blocks+b])
			zp := p.zeroPoint(r, b)
			if c >= p.K { // padding
				if p.code(r, c) != zp {
					t.Fatalf("%s %+v: padding code (%d,%d) = %d, want zero point %d", name, shape(p), r, c, p.code(r, c), zp)
				}
				continue
			}
			v, got := float64(w[r*p.K+c]), float64(d[r*p.K+c])
			e := math.Abs(v - got)
			end1, end2 := float64(-zp)*s, float64(15-zp)*s
			lo, hi := min(end1, end2), max(end1, end2)
			tol := 1e-6 * math.Abs(s) // float32 rounding of v/s and of the product
			switch {
			case v >= lo && v <= hi:
				if e > math.Abs(s)/2+tol {
					t.Fatalf("%s %+v: (%d,%d) w=%g got %g err %g > |scale|/2 = %g", name, shape(p), r, c, v, got, e, math.Abs(s)/2)
				}
			default:
				bound := math.Abs(s) + tol
				if asym {
					bound = math.Abs(s)/2 + tol
				}
				near := lo
				if v > hi {
					near = hi
				}
				if math.Abs(got-near) > tol || e > bound {
					t.Fatalf("%s %+v: (%d,%d) w=%g outside [%g,%g] got %g err %g (bound %g)", name, shape(p), r, c, v, lo, hi, got, e, bound)
				}
			}
		}
	}
}

func shape(p *Packed) string {
	return fmt.Sprintf("N %d K %d bs %d asym %v", p.N, p.K, p.BlockSize, p.ZeroPoints != nil)
}

// TestExactGrid: weights that are already on a block's quantization grid come back bit for
// bit, with the same codes, scales and zero points.
func TestExactGrid(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 42))
	for trial := range 200 {
		bs := []int{16, 32, 64, 128, 256}[trial%5]
		asym := trial%2 == 1
		n := 1 + r.IntN(4)
		k := 1 + r.IntN(3*bs)
		blocks := (k + bs - 1) / bs
		w := make([]float32, n*k)
		wantCodes := make([]int, n*blocks*bs)
		wantScales := make([]float32, n*blocks)
		wantZP := make([]int, n*blocks)
		for row := range n {
			for b := range blocks {
				// few significant bits, so every product and 15·s are exact in float32
				s := float32(math.Ldexp(float64(128+r.IntN(128)), -8-r.IntN(30)))
				zp := 8
				if asym {
					zp = r.IntN(16)
				} else if r.IntN(2) == 0 {
					s = -s
				}
				start, end := b*bs, min(b*bs+bs, k)
				// place the extreme codes (0, and 15 when asymmetric) at random spots
				perm := r.Perm(end - start)
				for i := start; i < end; i++ {
					c := r.IntN(16)
					if !asym && c == 0 {
						c = 1 // only the one planted element may reach −8·s
					}
					switch {
					case perm[i-start] == 0:
						c = 0
					case asym && perm[i-start] == 1:
						c = 15
					}
					wantCodes[row*blocks*bs+i] = c
					w[row*k+i] = float32(c-zp) * s
				}
				for i := end; i < start+bs; i++ {
					wantCodes[row*blocks*bs+i] = zp
				}
				if asym && end-start == 1 {
					// a one-element block cannot hold both ends (its range widens to 0): put
					// it on ±15·s, i.e. code 15 with zero point 0 or code 0 with zero point 15
					c := 15 * r.IntN(2)
					zp = 15 - c
					wantCodes[row*blocks*bs+start] = c
					w[row*k+start] = float32(c-zp) * s
					for i := end; i < start+bs; i++ {
						wantCodes[row*blocks*bs+i] = zp
					}
				}
				wantScales[row*blocks+b] = s
				wantZP[row*blocks+b] = zp
			}
		}
		p := mustQuantize(t, w, n, k, Options{BlockSize: bs, Asymmetric: asym})
		if d := p.Dequantize(); !slices.Equal(d, w) {
			t.Fatalf("trial %d (%s): Dequantize(Quantize(grid)) differs\n%v\n%v\nscales %v want %v", trial, shape(p), d, w, p.Scales, wantScales)
		}
		if !slices.Equal(p.Scales, wantScales) {
			t.Fatalf("trial %d (%s): scales %v want %v", trial, shape(p), p.Scales, wantScales)
		}
		for row := range n {
			for c := range blocks * bs {
				if got, want := p.code(row, c), wantCodes[row*blocks*bs+c]; got != want {
					t.Fatalf("trial %d (%s): code (%d,%d) = %d want %d", trial, shape(p), row, c, got, want)
				}
			}
			for b := range blocks {
				if got, want := p.zeroPoint(row, b), wantZP[row*blocks+b]; got != want {
					t.Fatalf("trial %d (%s): zero point (%d,%d) = %d want %d", trial, shape(p), row, b, got, want)
				}
			}
		}
	}
}

// TestParallelMatchesSerial: the row-parallel path gives the bytes of quantizing each row alone.
func TestParallelMatchesSerial(t *testing.T) {
	const n, k = 96, 1000 // above parallelMinElems, uneven worker split, odd blocks at bs 64
	w := gaussian(5, n*k, 1)
	for _, asym := range []bool{false, true} {
		opt := Options{BlockSize: 64, Asymmetric: asym}
		p := mustQuantize(t, w, n, k, opt)
		for r := range n {
			q := mustQuantize(t, w[r*k:(r+1)*k], 1, k, opt)
			bpr := p.Blocks * p.BlockSize / 2
			if !bytes.Equal(p.Data[r*bpr:(r+1)*bpr], q.Data) || !slices.Equal(p.Scales[r*p.Blocks:(r+1)*p.Blocks], q.Scales) {
				t.Fatalf("asym=%v row %d differs", asym, r)
			}
			if asym {
				zr := (p.Blocks + 1) / 2
				if !bytes.Equal(p.ZeroPoints[r*zr:(r+1)*zr], q.ZeroPoints) {
					t.Fatalf("row %d zero points differ", r)
				}
			}
		}
	}
}

// TestSymmetricScaleChoice measures both symmetric scale rules on Gaussian weights and checks
// that Quantize uses the one with the lower RMS error. The numbers are in the -v log.
func TestSymmetricScaleChoice(t *testing.T) {
	const n, k = 256, 4096
	w := gaussian(11, n*k, 0.02)
	for _, bs := range []int{16, 32, 64, 128, 256} {
		opt := Options{BlockSize: bs}
		var rms [2]float64
		for _, m := range []symMethod{symSignedMax, symAbsMax7} {
			p, err := quantize(w, n, k, opt, m)
			if err != nil {
				t.Fatal(err)
			}
			rms[m] = p.ErrorStats(w).RelRMS
		}
		pa, _ := Quantize(w, n, k, Options{BlockSize: bs, Asymmetric: true})
		asym := pa.ErrorStats(w).RelRMS
		t.Logf("block %3d: relative RMS error  signed v/-8 (ORT) %.5f  absmax/7 %.5f  asymmetric min/max %.5f", bs, rms[symSignedMax], rms[symAbsMax7], asym)
		if rms[defaultSymMethod] > rms[1-defaultSymMethod] {
			t.Errorf("block %d: default symmetric rule has the higher RMS error (%v)", bs, rms)
		}
	}
}

func TestDequantizeFP16(t *testing.T) {
	const n, k = 8, 200
	w := gaussian(3, n*k, 0.02)
	for _, asym := range []bool{false, true} {
		p := mustQuantize(t, w, n, k, Options{BlockSize: 32, Asymmetric: asym})
		h := p.ScalesFP16()
		d32 := p.Dequantize()
		ds := p.DequantizeWith(DequantizeOptions{FP16Scales: true})
		dv := p.DequantizeWith(DequantizeOptions{FP16Values: true})
		for r := range n {
			for c := range k {
				b := c / 32
				s16 := half.Float16ToFloat32(h[r*p.Blocks+b])
				q := float32(p.code(r, c) - p.zeroPoint(r, b))
				if ds[r*k+c] != q*s16 {
					t.Fatalf("FP16Scales (%d,%d) = %g want %g", r, c, ds[r*k+c], q*s16)
				}
				if want := half.RoundFloat16(q * s16); dv[r*k+c] != want {
					t.Fatalf("FP16Values (%d,%d) = %g want %g", r, c, dv[r*k+c], want)
				}
				// fp16 scale rounding moves a value by at most 2^−11 relative
				if e := math.Abs(float64(ds[r*k+c] - d32[r*k+c])); e > math.Abs(float64(d32[r*k+c]))/2048*1.0001 {
					t.Fatalf("FP16Scales (%d,%d) moved %g from %g", r, c, e, d32[r*k+c])
				}
			}
		}
		st32, st16 := p.ErrorStats(w), errorStats(w, dv)
		t.Logf("asym=%v: relative RMS fp32 %.5f, fp16 scales+values %.5f", asym, st32.RelRMS, st16.RelRMS)
		if st16.RelRMS > st32.RelRMS*1.01 {
			t.Errorf("fp16 rounding costs too much: %v vs %v", st16, st32)
		}
	}
}

func TestErrorStats(t *testing.T) {
	w := []float32{-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7.5}
	p := mustQuantize(t, w, 1, 16, Options{BlockSize: 16}) // scale 1, only 7.5 → 7 is off
	st := p.ErrorStats(w)
	want := Stats{MaxAbs: 0.5, RMS: math.Sqrt(0.25 / 16), RelRMS: math.Sqrt(0.25 / (344 - 49 + 56.25))}
	if math.Abs(st.MaxAbs-want.MaxAbs) > 1e-12 || math.Abs(st.RMS-want.RMS) > 1e-12 || math.Abs(st.RelRMS-want.RelRMS) > 1e-12 {
		t.Fatalf("ErrorStats %+v, want %+v", st, want)
	}
	z := mustQuantize(t, make([]float32, 32), 2, 16, Options{BlockSize: 16, Asymmetric: true})
	if st := z.ErrorStats(make([]float32, 32)); st != (Stats{}) {
		t.Fatalf("zeros: %+v", st)
	}
}
