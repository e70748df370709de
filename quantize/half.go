package quantize

import "github.com/ortq/ortq/internal/half"

// fp16 rounding of scales and values, as ONNX Runtime computes with fp16 activations.
func float32ToHalf(f float32) uint16 { return half.Float32ToFloat16(f) }
func halfToFloat32(h uint16) float32 { return half.Float16ToFloat32(h) }
func roundToHalf(f float32) float32  { return halfToFloat32(float32ToHalf(f)) }
