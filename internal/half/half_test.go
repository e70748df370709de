package half

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// halfTable lists every non-negative finite binary16 value in order, plus
// 65536 standing for +Inf (RNE rounds values ≥ 65520 there).
var halfTable = func() []float64 {
	var v []float64
	for h := uint16(0); h <= 0x7bff; h++ {
		v = append(v, float64(Float16ToFloat32(h)))
	}
	return append(v, 65536)
}()

// refFloat16 rounds by searching the table: nearest value, ties to the even
// bit pattern. Independent of the bit manipulations under test.
func refFloat16(f float32) uint16 {
	x := math.Abs(float64(f))
	sign := uint16(0)
	if math.Signbit(float64(f)) {
		sign = 0x8000
	}
	if math.IsInf(float64(f), 0) {
		return sign | 0x7c00
	}
	i := sort.SearchFloat64s(halfTable, x)
	if i == len(halfTable) {
		return sign | 0x7c00
	}
	if halfTable[i] == x || i == 0 {
		return sign | uint16(i)
	}
	lo, hi := halfTable[i-1], halfTable[i]
	switch {
	case x-lo < hi-x:
		return sign | uint16(i-1)
	case x-lo > hi-x:
		return sign | uint16(i)
	case (i-1)%2 == 0:
		return sign | uint16(i-1)
	default:
		return sign | uint16(i)
	}
}

func TestFloat16AllValuesRoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := Float16ToFloat32(uint16(h))
		if math.IsNaN(float64(f)) {
			if uint16(h)&0x7c00 != 0x7c00 || uint16(h)&0x3ff == 0 {
				t.Fatalf("%04x decoded to NaN", h)
			}
			if back := Float32ToFloat16(f); back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %04x re-encoded as %04x", h, back)
			}
			continue
		}
		if back := Float32ToFloat16(f); back != uint16(h) {
			t.Fatalf("%04x → %g → %04x", h, f, back)
		}
	}
}

func TestFloat16RoundingAgainstReference(t *testing.T) {
	var xs []float32
	// Every midpoint between neighbouring halves (exact in float32) and its
	// float32 neighbours: the cases where rounding direction matters.
	for i := 0; i+1 < len(halfTable); i++ {
		mid := float32((halfTable[i] + halfTable[i+1]) / 2)
		xs = append(xs, mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, 1e9), -mid)
	}
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 300000; i++ {
		xs = append(xs, math.Float32frombits(r.Uint32()))
	}
	xs = append(xs, 65504, 65519.996, 65520, 1e-8, 2.9802322e-08, 2.9802326e-08, float32(math.Inf(-1)), 0, float32(math.Copysign(0, -1)))
	bad := 0
	for _, x := range xs {
		if math.IsNaN(float64(x)) {
			continue
		}
		if got, want := Float32ToFloat16(x), refFloat16(x); got != want {
			if bad++; bad < 10 {
				t.Errorf("Float32ToFloat16(%g [%08x]) = %04x, want %04x", x, math.Float32bits(x), got, want)
			}
		}
	}
}

func TestHalfKnownValues(t *testing.T) {
	tests := []struct {
		f         float32
		f16, bf16 uint16
	}{
		{0, 0, 0},
		{1, 0x3c00, 0x3f80},
		{-2, 0xc000, 0xc000},
		{65504, 0x7bff, 0x4780}, // bf16 rounds 65504 up to 65536
		{65520, 0x7c00, 0x4780}, // half overflows by RNE
		{0x1p-24, 0x0001, 0x3380},
		{0x1p-25, 0x0000, 0x3300},     // tie with 0 → even (0)
		{1 + 0x1p-11, 0x3c00, 0x3f80}, // half tie → even
		{1 + 3*0x1p-11, 0x3c02, 0x3f80},
		{1 + 0x1p-8, 0x3c04, 0x3f80}, // bf16 tie → even
		{1 + 3*0x1p-8, 0x3c0c, 0x3f82},
		{float32(math.Inf(1)), 0x7c00, 0x7f80},
	}
	for _, tc := range tests {
		if got := Float32ToFloat16(tc.f); got != tc.f16 {
			t.Errorf("Float32ToFloat16(%g) = %04x, want %04x", tc.f, got, tc.f16)
		}
		if got := Float32ToBFloat16(tc.f); got != tc.bf16 {
			t.Errorf("Float32ToBFloat16(%g) = %04x, want %04x", tc.f, got, tc.bf16)
		}
	}
	nan := float32(math.NaN())
	if h := Float32ToBFloat16(nan); !math.IsNaN(float64(BFloat16ToFloat32(h))) {
		t.Errorf("bf16 NaN → %04x", h)
	}
	if h := Float32ToFloat16(nan); !math.IsNaN(float64(Float16ToFloat32(h))) {
		t.Errorf("f16 NaN → %04x", h)
	}
	for h := 0; h < 1<<16; h++ { // bf16 widening and narrowing are inverse
		f := BFloat16ToFloat32(uint16(h))
		if !math.IsNaN(float64(f)) && Float32ToBFloat16(f) != uint16(h) {
			t.Fatalf("bf16 %04x round trip", h)
		}
	}
}
