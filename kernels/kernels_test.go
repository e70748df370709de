package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ortq/ortq/internal/half"
)

// swigluRef is SwiGLU in float64 from float16 inputs.
func swigluRef(g, u uint16) float64 {
	x := float64(half.Float16ToFloat32(g))
	return x / (1 + math.Exp(-x)) * float64(half.Float16ToFloat32(u))
}

// swigluGradRef is SwiGLUGrad in float64 from float16 inputs.
func swigluGradRef(g, u, dh uint16) (dg, du float64) {
	x, y, d := float64(half.Float16ToFloat32(g)), float64(half.Float16ToFloat32(u)), float64(half.Float16ToFloat32(dh))
	s := 1 / (1 + math.Exp(-x))
	return d * y * s * (1 + x*(1-s)), d * x * s
}

// closeHalf reports whether a float16 result is the reference rounded, within one unit in
// the last place (the kernels compute in float32 and round once).
func closeHalf(got uint16, ref float64) bool {
	r := half.Float32ToFloat16(float32(ref))
	d := int(got) - int(r)
	if (got^r)&0x8000 != 0 { // opposite signs: only ±0 or values a unit apart around zero
		return math.Abs(float64(half.Float16ToFloat32(got))-ref) <= 6e-8
	}
	return d >= -1 && d <= 1
}

func randomHalves(rng *rand.Rand, n int, scale float64) []uint16 {
	h := make([]uint16, n)
	for i := range h {
		h[i] = half.Float32ToFloat16(float32(rng.NormFloat64() * scale))
	}
	return h
}

// TestSwiGLUCPU checks the CPU kernels of SwiGLU and SwiGLUGrad against float64 over random values and every
// float16 g (with u and dh fixed), subnormals, infinities and the range edges included.
func TestSwiGLUCPU(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 1 << 16
	g := make([]uint16, n)
	for i := range g {
		g[i] = uint16(i)
	}
	cases := []struct {
		name     string
		g, u, dh []uint16
	}{
		{"random", randomHalves(rng, 4096, 4), randomHalves(rng, 4096, 2), randomHalves(rng, 4096, 1e-3)},
		{"every g", g, randomHalves(rng, n, 1), randomHalves(rng, n, 1e-2)},
	}
	for _, c := range cases {
		h := swigluCPU(c.g, c.u)
		dg, du := swigluGradCPU(c.g, c.u, c.dh)
		bad := 0
		for i := range c.g {
			if isNaNOrInf(c.g[i]) {
				continue
			}
			rdg, rdu := swigluGradRef(c.g[i], c.u[i], c.dh[i])
			if rh := swigluRef(c.g[i], c.u[i]); !closeHalf(h[i], rh) {
				if bad++; bad <= 5 {
					t.Errorf("%s: g=%#04x u=%#04x: h %#04x, want %v", c.name, c.g[i], c.u[i], h[i], rh)
				}
			}
			if !closeHalf(dg[i], rdg) || !closeHalf(du[i], rdu) {
				if bad++; bad <= 5 {
					t.Errorf("%s: g=%#04x u=%#04x dh=%#04x: dg %#04x du %#04x, want %v %v", c.name, c.g[i], c.u[i], c.dh[i], dg[i], du[i], rdg, rdu)
				}
			}
		}
	}
}

func isNaNOrInf(h uint16) bool { return h&0x7c00 == 0x7c00 }

// For session_test.go (package kernels_test, which imports ortrun, which imports kernels).
var (
	RMSNormGradRef   = rmsNormGradRef
	RMSNormInputs    = rmsNormInputs
	CloseTo          = closeTo
	RotaryRef        = rotaryRef
	RotaryRowOf      = rotaryRowOf
	MaskedSoftmaxRef = maskedSoftmaxRef
	RMSNormRef       = rmsNormRef
	SwiGLURef        = swigluRef
	SwiGLUGradRef    = swigluGradRef
	CloseHalf        = closeHalf
	RandomHalves     = randomHalves
)

// rmsNormGradRef is RMSNormGrad in float64 from float16 x, w, dy and float32 r, and for each
// element the magnitude of the two terms whose difference dx is (|dy·w·r| + |x·r²·m|): a
// float32 kernel's error is a few of their last bits, however small the difference.
func rmsNormGradRef(x, w []uint16, r []float32, dy []uint16) (dx, mag []float64) {
	h := len(w)
	dx, mag = make([]float64, len(x)), make([]float64, len(x))
	f := func(v uint16) float64 { return float64(half.Float16ToFloat32(v)) }
	for row := range r {
		rr, m := float64(r[row]), 0.0
		for i := range h {
			m += f(dy[row*h+i]) * f(w[i]) * f(x[row*h+i]) * rr
		}
		m /= float64(h)
		for i := range h {
			a, b := f(dy[row*h+i])*f(w[i]), f(x[row*h+i])*rr*m
			dx[row*h+i], mag[row*h+i] = (a-b)*rr, (math.Abs(a)+math.Abs(b))*rr
		}
	}
	return dx, mag
}

// rmsNormInputs are random x [rows, h], w [h], dy [rows, h] and x's r = 1/rms.
func rmsNormInputs(rng *rand.Rand, rows, h int) (x, w []uint16, r []float32, dy []uint16) {
	x, w, dy = randomHalves(rng, rows*h, 2), randomHalves(rng, h, 1), randomHalves(rng, rows*h, 0.5)
	r = make([]float32, rows)
	for row := range r {
		s := 0.0
		for _, v := range x[row*h : (row+1)*h] {
			s += float64(half.Float16ToFloat32(v)) * float64(half.Float16ToFloat32(v))
		}
		r[row] = float32(1 / math.Sqrt(s/float64(h)+1e-5))
	}
	return x, w, r, dy
}

// closeTo reports whether float16 results are within one float16 rounding (a subnormal step
// at least) plus tol·mag[i] of the reference, mag being the size of the terms each result is
// the difference of (the row mean's float32 sum differs from float64's in its last bits, and
// a one-element row's dx is all cancellation); else the first element that is not.
func closeTo(got []uint16, ref, mag []float64, tol float64) (int, bool) {
	for i, v := range ref {
		if d := math.Abs(float64(half.Float16ToFloat32(got[i])) - v); d > math.Abs(v)/1024+tol*mag[i]+6e-8 {
			return i, false
		}
	}
	return 0, true
}

// TestRMSNormGradCPU checks the CPU kernel against float64 for rows of 3072 (the 3B shape),
// 5 and 1 elements.
func TestRMSNormGradCPU(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct{ rows, h int }{{6, 3072}, {9, 5}, {4, 1}} {
		x, w, r, dy := rmsNormInputs(rng, c.rows, c.h)
		got := rmsNormGradCPU(x, w, r, dy)
		ref, mag := rmsNormGradRef(x, w, r, dy)
		if i, ok := closeTo(got, ref, mag, 1e-5); !ok {
			t.Errorf("[%d, %d] element %d: dx %v, want %v", c.rows, c.h, i, half.Float16ToFloat32(got[i]), ref[i])
		}
	}
}

// rotaryRowOf is the first row of x that reads position index pi (batch·seq + token).
func rotaryRowOf(pi, heads, seq int, bnsh bool) int {
	if bnsh {
		return pi/seq*heads*seq + pi%seq
	}
	return pi * heads
}

// rotaryRef is Rotary in float64: x [batch, heads, seq, d] (bnsh) or [batch, seq, heads·d].
func rotaryRef(x, cs, sn []uint16, pos []int64, heads, seq, d int, bnsh bool) []float64 {
	f := func(v uint16) float64 { return float64(half.Float16ToFloat32(v)) }
	y, h := make([]float64, len(x)), d/2
	for row := range len(x) / d {
		pi := row / heads
		if bnsh {
			pi = row/(heads*seq)*seq + row%seq
		}
		p := int(pos[pi])
		for i := range h {
			x1, x2, c, s := f(x[row*d+i]), f(x[row*d+h+i]), f(cs[p*h+i]), f(sn[p*h+i])
			y[row*d+i], y[row*d+h+i] = x1*c-x2*s, x2*c+x1*s
		}
	}
	return y
}

// maskedSoftmaxRef is softmax(s + m) over the last axis in float64, m broadcast to s's shape.
func maskedSoftmaxRef(s, m []uint16, shape, mshape []int64) []float64 {
	f := func(v uint16) float64 { return float64(half.Float16ToFloat32(v)) }
	l := int(shape[3])
	p := make([]float64, len(s))
	for row := range len(s) / l {
		b, h, q := int64(row)/(shape[1]*shape[2]), int64(row)/shape[2]%shape[1], int64(row)%shape[2]
		mrow := int((b%mshape[0])*mshape[1]*mshape[2]+(h%mshape[1])*mshape[2]+q%mshape[2]) * l
		mx, sum := math.Inf(-1), 0.0
		for j := range l {
			mx = math.Max(mx, f(s[row*l+j])+f(m[mrow+j]))
		}
		for j := range l {
			sum += math.Exp(f(s[row*l+j]) + f(m[mrow+j]) - mx)
		}
		for j := range l {
			p[row*l+j] = math.Exp(f(s[row*l+j])+f(m[mrow+j])-mx) / sum
		}
	}
	return p
}

// rmsNormRef is RMSNorm in float64: y = x·r·w and r = 1/sqrt(mean(x²) + eps) per row of len(w).
func rmsNormRef(x, w []uint16, eps float64) (y, r []float64) {
	f := func(v uint16) float64 { return float64(half.Float16ToFloat32(v)) }
	h := len(w)
	y, r = make([]float64, len(x)), make([]float64, len(x)/h)
	for row := range r {
		s := 0.0
		for i := range h {
			s += f(x[row*h+i]) * f(x[row*h+i])
		}
		r[row] = 1 / math.Sqrt(s/float64(h)+eps)
		for i := range h {
			y[row*h+i] = f(x[row*h+i]) * r[row] * f(w[i])
		}
	}
	return y, r
}
