package ortrun

import (
	"fmt"
	"github.com/ortq/ortq/internal/half"

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
	// Uint4 (two values per byte) is for buffers and their views only (Buffer.View), not
	// for Run's tensors.
	Uint4 DType = DType(onnxpb.TensorProto_UINT4)
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

// Float32ToFloat16 and Float16ToFloat32 convert IEEE half-precision bit patterns (round to
// nearest even); internal/half holds the implementation.
var (
	Float32ToFloat16 = half.Float32ToFloat16
	Float16ToFloat32 = half.Float16ToFloat32
)
