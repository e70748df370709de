package quantize

import "math"

// IEEE 754 binary16 conversions. Hand-written: go.mod has no float16 library, and the two
// functions are small enough to test exhaustively (half_test.go).

// float32ToHalf rounds f to the nearest binary16, ties to even; overflow gives ±Inf, values
// below half the smallest subnormal give ±0, NaN stays NaN (quiet, top payload bits kept).
func float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff

	if exp == 0xff { // Inf or NaN
		if man == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7e00 | uint16(man>>13)
	}
	e := exp - 127 + 15 // re-biased exponent
	if e >= 0x1f {
		return sign | 0x7c00 // too large even before rounding
	}
	if e >= 1 { // normal half: drop 13 mantissa bits with round-to-nearest-even
		h := uint32(e)<<10 | man>>13
		rest := man & 0x1fff
		if rest > 0x1000 || (rest == 0x1000 && h&1 == 1) {
			h++ // a carry into the exponent is correct, up to 0x7c00 = Inf
		}
		return sign | uint16(h)
	}
	// Subnormal half (or zero): value = full·2^(exp−150) and the half unit is 2^−24, so the
	// half mantissa is full >> (126 − exp) before rounding.
	shift := uint(126 - exp) // ≥ 14 here
	if shift >= 25 {
		return sign // < 2^−25, below half the smallest subnormal (float32 subnormals too)
	}
	full := man | 0x800000
	h := full >> shift
	rest := full & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rest > half || (rest == half && h&1 == 1) {
		h++ // may become 0x400, the smallest normal: still the right encoding
	}
	return sign | uint16(h)
}

// halfToFloat32 converts a binary16 to float32 exactly.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	default: // subnormal: man·2^−24, exact in float32
		v := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
}

// roundToHalf returns f rounded to the nearest binary16 value, as a float32.
func roundToHalf(f float32) float32 { return halfToFloat32(float32ToHalf(f)) }
