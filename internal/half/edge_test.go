package half

import (
	"math"
	"testing"
)

func TestFloat32ToHalfEdgeCases(t *testing.T) {
	p2 := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	tests := []struct {
		name string
		in   float32
		want uint16
	}{
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"max half", 65504, 0x7bff},
		{"below overflow tie rounds down", 65519, 0x7bff},
		{"overflow tie to even is inf", 65520, 0x7c00},
		{"large overflows to inf", 1e10, 0x7c00},
		{"negative overflow", -1e10, 0xfc00},
		{"inf", float32(math.Inf(1)), 0x7c00},
		{"minus inf", float32(math.Inf(-1)), 0xfc00},
		{"smallest normal", p2(-14), 0x0400},
		{"largest subnormal", p2(-14) - p2(-24), 0x03ff},
		{"rounds up into smallest normal", p2(-14) - p2(-26), 0x0400},
		{"smallest subnormal", p2(-24), 0x0001},
		{"half smallest subnormal ties to zero", p2(-25), 0x0000},
		{"just above half smallest subnormal", p2(-25) * (1 + p2(-20)), 0x0001},
		{"three halves subnormal ties to even (2)", 3 * p2(-25), 0x0002},
		{"five halves subnormal ties to even (2)", 5 * p2(-25), 0x0002},
		{"negative subnormal", -p2(-24), 0x8001},
		{"float32 subnormal flushes to zero", p2(-140), 0x0000},
		{"negative tiny to negative zero", -p2(-30), 0x8000},
		{"tie to even stays", 1 + p2(-11), 0x3c00},
		{"tie to even rounds up", 1 + 3*p2(-11), 0x3c02},
		{"above tie rounds up", 1 + p2(-11) + p2(-20), 0x3c01},
		{"below tie rounds down", 1 + p2(-11) - p2(-22), 0x3c00},
		{"mantissa carry into exponent", 2 - p2(-12), 0x4000},
		{"one third", 1.0 / 3, 0x3555},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Float32ToFloat16(tt.in); got != tt.want {
				t.Errorf("Float32ToFloat16(%g) = %#04x, want %#04x", tt.in, got, tt.want)
			}
		})
	}
	for _, nan := range []float32{float32(math.NaN()), math.Float32frombits(0x7f800001), math.Float32frombits(0xffc00000)} {
		h := Float32ToFloat16(nan)
		if h&0x7c00 != 0x7c00 || h&0x03ff == 0 {
			t.Errorf("Float32ToFloat16(NaN %#08x) = %#04x, not a NaN", math.Float32bits(nan), h)
		}
	}
}

// TestHalfExhaustive checks every binary16 value: exact round trip, and that the midpoints
// between neighbours (and the floats just either side of them) round as IEEE requires.
func TestHalfExhaustive(t *testing.T) {
	for h := 0; h < 0x10000; h++ {
		f := Float16ToFloat32(uint16(h))
		if math.IsNaN(float64(f)) {
			if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
				t.Fatalf("Float16ToFloat32(%#04x) = NaN", h)
			}
			continue
		}
		if got := Float32ToFloat16(f); got != uint16(h) {
			t.Fatalf("round trip %#04x -> %g -> %#04x", h, f, got)
		}
	}
	for a := uint16(0); a < 0x7c00; a++ {
		lo := Float16ToFloat32(a)
		hi := float32(65536) // what the next code up, +Inf, stands in for when rounding
		if a+1 < 0x7c00 {
			hi = Float16ToFloat32(a + 1)
		}
		mid := lo + (hi-lo)/2 // exact: float32 has 13 more mantissa bits
		even := a
		if a&1 == 1 {
			even = a + 1
		}
		for _, sign := range []uint16{0, 0x8000} {
			s := float32(1)
			if sign != 0 {
				s = -1
			}
			if got := Float32ToFloat16(s * mid); got != sign|even {
				t.Fatalf("tie %g: got %#04x want %#04x", s*mid, got, sign|even)
			}
			below := math.Nextafter32(mid, lo)
			if got := Float32ToFloat16(s * below); got != sign|a {
				t.Fatalf("below tie %g: got %#04x want %#04x", s*below, got, sign|a)
			}
			above := math.Nextafter32(mid, hi)
			if got := Float32ToFloat16(s * above); got != sign|(a+1) {
				t.Fatalf("above tie %g: got %#04x want %#04x", s*above, got, sign|(a+1))
			}
		}
	}
}
