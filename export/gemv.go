package export

import (
	"fmt"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// slowGEMV lists the MatMulNBits nodes of an exported graph that ONNX Runtime's CUDA kernel
// cannot run through its fused 4-bit GEMV at M = 1 (a decode step), with the reason. The
// conditions are those of contrib_ops/cuda/quantization/matmul_nbits.cc (ComputeInternal)
// and TryMatMul4Bits in matmul_4bits.cu: no g_idx input, zero points absent or packed
// uint8 (zero points of the activation type take the dequantize + GEMM path), bits 4,
// block_size 16, 32, 64 or 128, N and K multiples of 8 (N of the 8 columns a thread block
// computes), no bias. ortq prepare writes symmetric (no zero points) or uint8 zero points,
// block 32 by default and no g_idx or bias, so its Linears qualify; the check guards
// imported graphs that were quantized elsewhere.
func slowGEMV(g *onnxpb.GraphProto, inits map[string]*onnxpb.TensorProto) []string {
	var out []string
	for _, n := range g.Node {
		if n.OpType != "MatMulNBits" {
			continue
		}
		if why := gemvBlocker(n, inits); why != "" {
			out = append(out, fmt.Sprintf("MatMulNBits %q misses ONNX Runtime's CUDA 4-bit GEMV at batch 1 (%s): decoding runs it as dequantize + GEMM", n.Name, why))
		}
	}
	return out
}

// gemvBlocker is why node n misses the fast path ("" when it takes it).
func gemvBlocker(n *onnxpb.NodeProto, inits map[string]*onnxpb.TensorProto) string {
	bits, bs := ortgraph.AttrInt(n, "bits", 4), ortgraph.AttrInt(n, "block_size", 0)
	N, K := ortgraph.AttrInt(n, "N", 0), ortgraph.AttrInt(n, "K", 0)
	has := func(i int) bool { return len(n.Input) > i && n.Input[i] != "" }
	switch {
	case bits != 4:
		return fmt.Sprintf("bits %d, not 4", bits)
	case bs != 16 && bs != 32 && bs != 64 && bs != 128:
		return fmt.Sprintf("block_size %d, not 16, 32, 64 or 128", bs)
	case N%8 != 0 || K%8 != 0:
		return fmt.Sprintf("N %d, K %d: not multiples of 8", N, K)
	case has(4):
		return "a g_idx input"
	case has(5):
		return "a bias input"
	case has(3):
		if zp := inits[n.Input[3]]; zp == nil || zp.DataType != int32(onnxpb.TensorProto_UINT8) {
			return "zero points that are not packed uint8"
		}
	}
	return ""
}
