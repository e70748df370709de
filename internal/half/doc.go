// Package half converts between float32 and IEEE 754 binary16 / bfloat16 with
// round-to-nearest-even, the one implementation every ortq package uses (graph constants,
// 4-bit scales, tensors passed to ONNX Runtime, safetensors I/O). Hand-written because no
// module in go.mod provides it (x448/float16 is not among them); train's tests check it
// bit for bit against torch's tensor.half() / tensor.bfloat16().
package half
