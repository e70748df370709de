package ortgraph

import (
	"encoding/binary"
	"fmt"
	"github.com/ortq/ortq/internal/half"
	"math"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Data type shorthands used across ortq.
const (
	Float   = int32(onnxpb.TensorProto_FLOAT)
	Float16 = int32(onnxpb.TensorProto_FLOAT16)
	Double  = int32(onnxpb.TensorProto_DOUBLE)
	Int64   = int32(onnxpb.TensorProto_INT64)
	Int32   = int32(onnxpb.TensorProto_INT32)
	Uint8   = int32(onnxpb.TensorProto_UINT8)
	Bool    = int32(onnxpb.TensorProto_BOOL)
	Uint4   = int32(onnxpb.TensorProto_UINT4)
	BF16    = int32(onnxpb.TensorProto_BFLOAT16)
)

// DTypeName is the ONNX spelling of a data type, for messages and dumps.
func DTypeName(dt int32) string {
	if s, ok := onnxpb.TensorProto_DataType_name[dt]; ok {
		return s
	}
	return fmt.Sprintf("dtype(%d)", dt)
}

// rawFromTyped converts the typed repeated fields of a tensor to little-endian raw bytes.
func rawFromTyped(t *onnxpb.TensorProto) ([]byte, error) {
	if len(t.RawData) > 0 {
		return t.RawData, nil
	}
	n := NumElements(t.Dims)
	var out []byte
	switch t.DataType {
	case Float:
		out = make([]byte, 0, 4*len(t.FloatData))
		for _, v := range t.FloatData {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	case Double:
		for _, v := range t.DoubleData {
			out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
		}
	case Int64:
		for _, v := range t.Int64Data {
			out = binary.LittleEndian.AppendUint64(out, uint64(v))
		}
	case Int32:
		for _, v := range t.Int32Data {
			out = binary.LittleEndian.AppendUint32(out, uint32(v))
		}
	case Float16, BF16, int32(onnxpb.TensorProto_UINT16), int32(onnxpb.TensorProto_INT16):
		for _, v := range t.Int32Data {
			out = binary.LittleEndian.AppendUint16(out, uint16(v))
		}
	case Bool, Uint8, int32(onnxpb.TensorProto_INT8):
		for _, v := range t.Int32Data {
			out = append(out, byte(v))
		}
	case Uint4, int32(onnxpb.TensorProto_INT4):
		for _, v := range t.Int32Data {
			out = append(out, byte(v))
		}
		return out, nil
	default:
		return nil, fmt.Errorf("initializer %q: %w: unsupported data type %s", t.Name, ErrInvalidModel, DTypeName(t.DataType))
	}
	if want := ByteSize(t); int64(len(out)) != want && n > 0 {
		return nil, fmt.Errorf("initializer %q: %w: has %d bytes of data, dims %v need %d", t.Name, ErrInvalidModel, len(out), t.Dims, want)
	}
	return out, nil
}

// Floats decodes a FLOAT, FLOAT16, BFLOAT16 or DOUBLE initializer to float32.
func (m *Model) Floats(t *onnxpb.TensorProto) ([]float32, error) {
	raw, err := m.TensorBytes(t)
	if err != nil {
		return nil, err
	}
	n := int(NumElements(t.Dims))
	out := make([]float32, n)
	switch t.DataType {
	case Float:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case Double:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		}
	case Float16:
		for i := range out {
			out[i] = HalfToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		}
	default:
		return nil, fmt.Errorf("initializer %q: expected a floating-point tensor, got %s", t.Name, DTypeName(t.DataType))
	}
	return out, nil
}

// Int64s decodes an INT64 or INT32 initializer.
func (m *Model) Int64s(t *onnxpb.TensorProto) ([]int64, error) {
	raw, err := m.TensorBytes(t)
	if err != nil {
		return nil, err
	}
	n := int(NumElements(t.Dims))
	out := make([]int64, n)
	switch t.DataType {
	case Int64:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
	case Int32:
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
		}
	default:
		return nil, fmt.Errorf("initializer %q: expected an integer tensor, got %s", t.Name, DTypeName(t.DataType))
	}
	return out, nil
}

// FloatTensor builds a tensor of the given type (FLOAT, FLOAT16, DOUBLE) from float32 values.
func FloatTensor(name string, dt int32, dims []int64, v []float32) *onnxpb.TensorProto {
	if int64(len(v)) != NumElements(dims) {
		panic(fmt.Sprintf("FloatTensor %q: %d values for dims %v", name, len(v), dims))
	}
	var raw []byte
	switch dt {
	case Float:
		raw = make([]byte, 0, 4*len(v))
		for _, x := range v {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(x))
		}
	case Float16:
		raw = make([]byte, 0, 2*len(v))
		for _, x := range v {
			raw = binary.LittleEndian.AppendUint16(raw, FloatToHalf(x))
		}
	case Double:
		raw = make([]byte, 0, 8*len(v))
		for _, x := range v {
			raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(float64(x)))
		}
	case BF16:
		for _, x := range v {
			raw = binary.LittleEndian.AppendUint16(raw, FloatToBF16(x))
		}
	default:
		panic(fmt.Sprintf("FloatTensor %q: unsupported type %s", name, DTypeName(dt)))
	}
	return &onnxpb.TensorProto{Name: name, DataType: dt, Dims: append([]int64(nil), dims...), RawData: raw}
}

// Int64Tensor builds an INT64 tensor.
func Int64Tensor(name string, dims []int64, v []int64) *onnxpb.TensorProto {
	raw := make([]byte, 0, 8*len(v))
	for _, x := range v {
		raw = binary.LittleEndian.AppendUint64(raw, uint64(x))
	}
	return &onnxpb.TensorProto{Name: name, DataType: Int64, Dims: append([]int64(nil), dims...), RawData: raw}
}

// BytesTensor builds a tensor from raw bytes already in ONNX layout (used for packed
// 4-bit data).
func BytesTensor(name string, dt int32, dims []int64, raw []byte) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: name, DataType: dt, Dims: append([]int64(nil), dims...), RawData: raw}
}

// HalfToFloat, FloatToHalf and FloatToBF16 convert half-precision bit patterns (round to
// nearest even); internal/half holds the implementation.
var (
	HalfToFloat = half.Float16ToFloat32
	FloatToHalf = half.Float32ToFloat16
	FloatToBF16 = half.Float32ToBFloat16
)

// ortq's own ops, which package kernels implements for ONNX Runtime (a CPU and a CUDA kernel
// each) and gradient rules emit where autodiff.Options.FusedKernels allows.
const (
	// OrtqDomain is their ONNX domain.
	OrtqDomain = "ai.ortq"
	// OpSwiGLU(g, u) → h = silu(g)·u = g·σ(g)·u for float16 g and u of one shape.
	OpSwiGLU = "SwiGLU"
	// OpSwiGLUGrad(g, u, dh) → (dg, du) is the gradient of h = silu(g)·u for float16 g, u and
	// dh of one shape: with s = σ(g), du = dh·g·s and dg = dh·u·s·(1 + g·(1 − s)).
	OpSwiGLUGrad = "SwiGLUGrad"
	// OpRMSNormGrad(x, w, r, dy[, res]) → dx is the gradient of y = x·r·w with respect to x
	// for float16 x and dy of one shape [..., h], float16 w [h] and float32 r [..., 1] (the
	// norm's inv_std_var): with g = dy·w and x̂ = x·r, dx = r·(g − x̂·mean(g·x̂)) over the last
	// axis, plus res (another float16 gradient of x) where given.
	OpRMSNormGrad = "RMSNormGrad"
	// OpRMSNorm(x, w) → (y, r) is SimplifiedLayerNormalization over the last axis with float32
	// statistics: y = x·r·w, r = 1/sqrt(mean(x²) + epsilon) (attribute, default 1e-5) as
	// float32 [..., 1], for float16 x [..., h] and w [h].
	OpRMSNorm = "RMSNorm"
	// OpRotary(x, cos, sin, pos) → y is ONNX's RotaryEmbedding without interleaving over all
	// D channels of a head, with position ids: float16 x [batch, heads, seq, D] or [batch,
	// seq, heads·D], float16 cos and sin [positions, D/2], int64 pos [batch, seq].
	OpRotary = "Rotary"
	// OpMaskedSoftmax(s, m) → p = softmax(s + m) over the last axis, for float16 s [batch,
	// heads, q, L] and an additive float16 mask m [batch or 1, heads or 1, q or 1, L].
	OpMaskedSoftmax = "MaskedSoftmax"
	// OpDequantBnb4(bytes, lut, absmax) → W is bitsandbytes' 4-bit weight dequantized: uint8
	// bytes [N·K/2] (byte j holds elements 2j, 2j + 1), a float16 [256, 2] table of each
	// byte's two codes, float16 absmax one value a block; W float16 [N, K] (attributes N, K)
	// with W[2j + i] = lut[byte j][i]·absmax[(2j + i)/block].
	OpDequantBnb4 = "DequantBnb4"
)
