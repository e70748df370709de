// Package quantize turns float32 Linear weights into 4-bit block-quantized tensors that ONNX
// Runtime consumes directly, so that `ortq prepare` can keep exactly one 4-bit copy of each base
// weight and feed it both to com.microsoft.MatMulNBits (evaluation graph) and to DequantizeLinear
// opset 21 (UINT4, one scale per block; training graphs, forward and the dy·W of the backward
// pass).
//
// Layout. A weight W [N, K] (torch Linear [out, in]) is cut into blocks of BlockSize along K; the
// last block is padded with zeros when K is not a multiple of BlockSize (MatMulNBits'
// ceil(K/block_size)). Each block has one float32 scale and, when asymmetric, one 4-bit zero
// point. Codes are unsigned 0..15 and dequantize as (code − zero_point) · scale.
//
//   - Packed.Data is MatMulNBits' B input, uint8 [N, Blocks, BlockSize/2], two codes a byte,
//     the even K index in the low nibble. Because every block holds an even number of codes
//     the same bytes are also an ONNX UINT4 tensor (ONNX packs 4-bit tensors low nibble first
//     over the flattened tensor) of shape [N, Blocks·BlockSize] (DequantizeLinear blocked
//     along axis 1) or [N·Blocks, BlockSize], one row per block (DequantizeLinear per axis 0,
//     then a Reshape to [N, Blocks·BlockSize]). The training graphs use the second: the same
//     values, and ONNX Runtime's per-axis kernel is the faster one (BenchmarkDequant).
//   - Packed.Scales is [N, Blocks], MatMulNBits' scales; the same values flattened, [N·Blocks],
//     are the per-axis DequantizeLinear's x_scale (blocked: [N, Blocks] as they are).
//   - Packed.ZeroPoints is MatMulNBits' packed uint8 zero_points [N, ceil(Blocks/2)] (each row
//     padded to whole bytes), nil when symmetric: MatMulNBits' default zero point is 8.
//     DequantizeLinear needs UINT4 zero points instead (its default is 0, and its rows are not
//     byte-aligned when Blocks is odd): Packed.ZeroPointsUINT4, one contiguous stream that is
//     [N, Blocks] (blocked) or [N·Blocks] (per axis).
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
//
// NF4 and FP4 (Options.Type, bnb4.go) are bitsandbytes' 4-bit types, the layout
// com.microsoft.MatMulBnb4 reads: the [N, K] weight flattened row-major, blocks of BlockSize
// consecutive values (so a block may cross rows when K is not a multiple of it; N·K must be a
// multiple), each block scaled by its absolute maximum, each value replaced by the code of
// the nearest entry of the 16-value table (NF4Table, FP4Table: bitsandbytes' constants, as
// ONNX Runtime's kernels copy them), two codes a byte with the even flat index in the high
// nibble. Dequantization is table[code]·absmax. Double quantization (bitsandbytes'
// compress_statistics, used by the QLoRA recipe's bnb_4bit_use_double_quant) stores the
// absmax values as: offset = their mean; per block of 256 of them, a float32 scale = the
// absolute maximum of (absmax − offset); one 8-bit code each, the nearest entry of
// bitsandbytes' signed dynamic map (DynamicMap) to (absmax − offset)/scale. Dequantized:
// DynamicMap[code]·scale + offset. What may differ from bitsandbytes: the mean is summed in
// float64 (torch sums float32 pairwise), and a value exactly halfway between two map entries
// takes the lower one (bitsandbytes' CUDA binary search may take the upper): both move an
// absmax by at most one step of the map, rarely. The block size is ortq's --block-size
// (default 32); bitsandbytes' default for 4-bit is 64.
package quantize
