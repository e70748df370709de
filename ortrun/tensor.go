package ortrun

import (
	"fmt"
	"math"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// DType is a tensor element type. Its values are ONNX's TensorProto.DataType numbers (which
// ONNX Runtime's ONNXTensorElementDataType also uses), so conversions are plain casts.
type DType int

const (
	Undefined DType = DType(onnxpb.TensorProto_UNDEFINED)
	Float32   DType = DType(onnxpb.TensorProto_FLOAT)
	Uint8     DType = DType(onnxpb.TensorProto_UINT8)
	Int32     DType = DType(onnxpb.TensorProto_INT32)
	Int64     DType = DType(onnxpb.TensorProto_INT64)
	Bool      DType = DType(onnxpb.TensorProto_BOOL)
	Float16   DType = DType(onnxpb.TensorProto_FLOAT16)
	Float64   DType = DType(onnxpb.TensorProto_DOUBLE)
)

// Proto returns the ONNX TensorProto data type.
func (d DType) Proto() onnxpb.TensorProto_DataType { return onnxpb.TensorProto_DataType(d) }

// String gives ONNX's lower-case name ("float", "float16", "int64", ...).
func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	case Float16:
		return "float16"
	}
	if s, ok := onnxpb.TensorProto_DataType_name[int32(d)]; ok {
		return lower(s)
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// supported reports whether Run can pass and return tensors of this type.
func (d DType) supported() bool {
	switch d {
	case Float32, Float64, Float16, Int64, Int32, Uint8, Bool:
		return true
	}
	return false
}

// Tensor is a dense host tensor. Data is a []float32, []float64, []int64, []int32, []uint8,
// []bool, or, for Float16, []uint16 holding IEEE half-precision bit patterns (see
// Float32ToFloat16). Shape may be empty for a scalar.
type Tensor struct {
	DType DType
	Shape []int64
	Data  any
}

// NumElements is the product of Shape (1 for a scalar).
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// dataLen returns len(Data) and the DType that Data's Go type holds (Float16 for []uint16).
func dataLen(data any) (int, DType) {
	switch d := data.(type) {
	case []float32:
		return len(d), Float32
	case []float64:
		return len(d), Float64
	case []uint16:
		return len(d), Float16
	case []int64:
		return len(d), Int64
	case []int32:
		return len(d), Int32
	case []uint8:
		return len(d), Uint8
	case []bool:
		return len(d), Bool
	}
	return 0, Undefined
}

// Validate checks that DType, Data's Go type and len(Data) agree with Shape.
func (t *Tensor) Validate() error {
	if t == nil {
		return fmt.Errorf("nil tensor")
	}
	for i, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("shape %v: axis %d is negative", t.Shape, i)
		}
	}
	n, dt := dataLen(t.Data)
	if dt == Undefined {
		return fmt.Errorf("data of Go type %T is not supported (want []float32, []float64, []uint16 for float16, []int64, []int32, []uint8 or []bool)", t.Data)
	}
	if dt != t.DType {
		return fmt.Errorf("DType is %s but Data is %T (which holds %s)", t.DType, t.Data, dt)
	}
	if int64(n) != t.NumElements() {
		return fmt.Errorf("shape %v needs %d elements, Data has %d", t.Shape, t.NumElements(), n)
	}
	return nil
}

// Float32ToFloat16 converts to IEEE 754 binary16 bits, rounding to nearest even, as numpy's
// astype(float16) does. Hand-written: no dependency in go.mod provides half floats.
func Float32ToFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	switch {
	case exp == 0xff: // Inf or NaN (keep NaN quiet and non-zero)
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127 > 15: // overflow
		return sign | 0x7c00
	case exp-127 >= -14: // normal half
		e := uint32(exp-127+15) << 10
		m := man >> 13
		rest := man & 0x1fff
		h := e | m
		if rest > 0x1000 || (rest == 0x1000 && h&1 == 1) {
			h++ // may carry into the exponent, which is the right result (up to Inf)
		}
		return sign | uint16(h)
	case exp-127 >= -25: // subnormal half
		man |= 0x800000
		shift := uint32(-14-(exp-127)) + 13
		m := man >> shift
		rest := man & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || (rest == half && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	}
	return sign // underflow to ±0
}

// Float16ToFloat32 converts IEEE 754 binary16 bits to float32 (exact).
func Float16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// subnormal: value = man · 2^-24
	f := float32(man) * (1.0 / (1 << 24))
	if sign != 0 {
		f = -f
	}
	return f
}
