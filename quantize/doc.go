// Package quantize turns float32 Linear weights into 4-bit block-quantized tensors that ONNX
// Runtime consumes directly, so that `ortq prepare` can keep exactly one 4-bit copy of each base
// weight and feed it both to com.microsoft.MatMulNBits (forward) and to DequantizeLinear opset 21
// (UINT4, blocked, for the W·x the backward pass needs).
//
// Layout. A weight W [N, K] (torch Linear [out, in]) is cut into blocks of BlockSize along K; the
// last block is padded with zeros when K is not a multiple of BlockSize (MatMulNBits'
// ceil(K/block_size)). Each block has one float32 scale and, when asymmetric, one 4-bit zero
// point. Codes are unsigned 0..15 and dequantize as (code − zero_point) · scale.
//
//   - Packed.Data is MatMulNBits' B input, uint8 [N, Blocks, BlockSize/2], two codes a byte,
//     the even K index in the low nibble. Because every row holds an even number of codes the
//     same bytes are also an ONNX UINT4 tensor [N, Blocks·BlockSize] (ONNX packs 4-bit tensors
//     low nibble first over the flattened tensor).
//   - Packed.Scales is [N, Blocks], MatMulNBits' scales and DequantizeLinear's x_scale.
//   - Packed.ZeroPoints is MatMulNBits' packed uint8 zero_points [N, ceil(Blocks/2)] (each row
//     padded to whole bytes), nil when symmetric: MatMulNBits' default zero point is 8.
//     DequantizeLinear needs a UINT4 [N, Blocks] zero point instead (its default is 0, and its
//     rows are not byte-aligned when Blocks is odd): Packed.ZeroPointsUINT4.
//
// Scale choice (symmetric). ONNX Runtime's own blockwise quantizer (MLAS range2scale) takes
// the block's value of largest magnitude, v, and uses scale = v / −8: v lands exactly on code 0
// and the other 15 codes cover the opposite side up to 7/8·|v|. This uses all 16 codes, at the
// price of negative scales (when v > 0) and a clamping error of up to |scale| on the opposite
// side. The alternative absmax/7 keeps positive scales and codes 1..15 only. On Gaussian weights
// signed-range gives the lower RMS error (see TestSymmetricScaleChoice, numbers in its log), so
// it is what Quantize does. Consumers must not assume scales are positive.
//
// Asymmetric: ONNX Runtime's range2scalezp: the block range is widened to include 0, scale =
// (max − min)/15, zero point = round(−min/scale) in 0..15, so 0 (and the padding) is exact.
package quantize
