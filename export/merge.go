package export

import (
	"fmt"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/quantize"
)

// mergedWeights returns, for every module the adapter adapts, the weight W + (α/r)·B·A as
// a [in, out] initializer in the graph's float type (`--merge`): 4-bit bases are dequantized
// first, so the merged model is full precision (float32 models stay float32, float16 ones
// become float16 weights).
func mergedWeights(s *Source, ad *Adapter) (map[string]*onnxpb.TensorProto, error) {
	out := map[string]*onnxpb.TensorProto{}
	for _, mod := range ad.Modules {
		l := s.Linears[mod]
		if l == nil {
			return nil, fmt.Errorf("eval graph: no Linear %s for the adapter's %s", mod, passes.PEFTName(mod, "A"))
		}
		w, err := dense(s, l) // [in, out]
		if err != nil {
			return nil, err
		}
		sh := ad.Shape[mod]
		r, in, outDim := int(sh[0][0]), int(sh[0][1]), int(sh[1][0])
		if int64(in) != l.In || int64(outDim) != l.Out {
			return nil, fmt.Errorf("%s: %s is [%d, %d], the adapter's A/B say in %d, out %d", ad.Path, mod, l.In, l.Out, in, outDim)
		}
		A, B := ad.A[mod], ad.B[mod]
		for i := 0; i < in; i++ {
			for o := 0; o < outDim; o++ {
				var d float64
				for k := 0; k < r; k++ {
					d += float64(B[o*r+k]) * float64(A[k*in+i])
				}
				w[i*outDim+o] += float32(ad.Scale * d)
			}
		}
		out[mod] = ortgraph.FloatTensor(mod+".weight_merged", s.DType, []int64{l.In, l.Out}, w)
	}
	return out, nil
}

// dense returns Linear l's weight as float32 [in, out].
func dense(s *Source, l *passes.Linear) ([]float32, error) {
	n := l.Node
	switch n.OpType {
	case "MatMulNBits":
		return dequantize(s, n)
	case "MatMulBnb4":
		return denseBnb4(s, n)
	}
	w, err := s.Eval.Floats(s.G.Initializer(l.Weight))
	if err != nil {
		return nil, err
	}
	if l.WeightIsOutIn {
		return quantize.Transpose(w, int(l.Out), int(l.In)), nil
	}
	return w, nil
}

// dequantize expands a MatMulNBits weight (B uint8 [N, blocks, bs/2], low nibble first;
// scales [N, blocks]; optional packed zero points [N, ⌈blocks/2⌉], default 8) to float32
// [K, N]: (code − zero point)·scale, the operator's definition.
func dequantize(s *Source, n *onnxpb.NodeProto) ([]float32, error) {
	K, N := int(ortgraph.AttrInt(n, "K", 0)), int(ortgraph.AttrInt(n, "N", 0))
	bs := int(ortgraph.AttrInt(n, "block_size", 0))
	if ortgraph.AttrInt(n, "bits", 4) != 4 || bs <= 0 || K <= 0 || N <= 0 {
		return nil, fmt.Errorf("eval graph node %q: MatMulNBits with bits %d, block_size %d: only 4-bit is merged", n.Name, ortgraph.AttrInt(n, "bits", 4), bs)
	}
	blocks := (K + bs - 1) / bs
	raw, err := s.Eval.TensorBytes(s.G.Initializer(n.Input[1]))
	if err != nil {
		return nil, err
	}
	scales, err := s.Eval.Floats(s.G.Initializer(n.Input[2]))
	if err != nil {
		return nil, err
	}
	var zp []byte
	if len(n.Input) > 3 && n.Input[3] != "" {
		if zp, err = s.Eval.TensorBytes(s.G.Initializer(n.Input[3])); err != nil {
			return nil, err
		}
	}
	if len(raw) != N*blocks*bs/2 || len(scales) != N*blocks {
		return nil, fmt.Errorf("eval graph node %q: B has %d bytes and %d scales, K %d N %d block %d need %d and %d", n.Name, len(raw), len(scales), K, N,
			bs, N*blocks*bs/2, N*blocks)
	}
	w := make([]float32, K*N)
	zpRow := (blocks + 1) / 2
	for o := 0; o < N; o++ {
		for blk := 0; blk < blocks; blk++ {
			z := 8
			if zp != nil {
				z = int(zp[o*zpRow+blk/2]>>(4*(blk%2))) & 15
			}
			sc := scales[o*blocks+blk]
			for j := 0; j < bs && blk*bs+j < K; j++ {
				b := raw[(o*blocks+blk)*bs/2+j/2]
				code := int(b>>(4*(j%2))) & 15
				w[(blk*bs+j)*N+o] = float32(code-z) * sc
			}
		}
	}
	return w, nil
}
