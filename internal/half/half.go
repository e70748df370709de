package half

import "math"

// Float32ToFloat16 rounds f to the nearest binary16 value (ties to even);
// overflow gives ±Inf, NaN stays NaN (quiet, top payload bits kept).
func Float32ToFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // binary16 biased exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e >= 1 {
		h := uint32(e)<<10 | mant>>13
		rem := mant & 0x1fff
		if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
			h++ // a carry out of the mantissa correctly bumps the exponent (to Inf at the top)
		}
		return sign | uint16(h)
	}
	// Result is subnormal (or zero): value = m·2^(exp-150), unit 2^-24.
	if exp == 0 {
		return sign // float32 subnormals are far below half's smallest subnormal
	}
	m := mant | 0x800000
	shift := uint(126 - exp) // ≥ 14
	if shift > 24 {
		return sign
	}
	q := m >> shift
	rem := m & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rem > half || (rem == half && q&1 == 1) {
		q++ // may become 0x400, the smallest normal: the bit pattern is right
	}
	return sign | uint16(q)
}

// Float16ToFloat32 converts binary16 bits to float32 exactly.
func Float16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		v := float32(mant) * (1.0 / (1 << 24)) // exact: a power-of-two scale
		if sign != 0 {
			v = -v
		}
		return v
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	default:
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	}
}

// Float32ToBFloat16 rounds f to the nearest bfloat16 (ties to even), as
// torch's float→bfloat16 cast does; NaN becomes a quiet NaN.
func Float32ToBFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BFloat16ToFloat32 converts bfloat16 bits to float32 exactly.
func BFloat16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// EncodeFloat16 converts a slice (convenience for tensor I/O).
func EncodeFloat16(src []float32) []uint16 {
	out := make([]uint16, len(src))
	for i, v := range src {
		out[i] = Float32ToFloat16(v)
	}
	return out
}

// EncodeBFloat16 converts a slice.
func EncodeBFloat16(src []float32) []uint16 {
	out := make([]uint16, len(src))
	for i, v := range src {
		out[i] = Float32ToBFloat16(v)
	}
	return out
}

// RoundFloat16 rounds f to the nearest binary16 value and back: the float32 that an fp16
// tensor would hold (ONNX Runtime's fp16 activations and scales).
func RoundFloat16(f float32) float32 { return Float16ToFloat32(Float32ToFloat16(f)) }
