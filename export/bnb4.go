package export

import (
	"fmt"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/quantize"
)

// bnb4Base applies an NF4/FP4 base weight as the eval graph holds it: MatMulBnb4 over the
// same bytes and absmax, the double-quantized absmax dequantized by the same small chain
// in front of it (so the export keeps the 8-bit absmax, as training did).
func (b *builder) bnb4Base(n *onnxpb.NodeProto, x, name string) (string, error) {
	g := b.g
	for _, in := range n.Input[1:2] {
		if b.s.G.Initializer(in) == nil {
			return "", fmt.Errorf("eval graph node %q: input %q is not an initializer", n.Name, in)
		}
	}
	absmax := n.Input[2]
	if codes, scales, offset, ok := autodiff.Bnb4Nested(n); ok {
		for _, in := range []string{codes, scales, offset} {
			if b.s.G.Initializer(in) == nil {
				return "", fmt.Errorf("eval graph node %q: double-quantized absmax %q is not an initializer", n.Name, in)
			}
			b.copyInit(in)
		}
		blocks := ortgraph.AttrInt(n, "N", 0) * ortgraph.AttrInt(n, "K", 0) / max(1, ortgraph.AttrInt(n, "block_size", 1))
		absmax = autodiff.Bnb4Absmax(g, codes, scales, offset, blocks, autodiff.Bnb4Gate(g, x), b.s.DType)
	} else if b.s.G.Initializer(absmax) == nil {
		return "", fmt.Errorf("eval graph node %q: absmax %q is not an initializer", n.Name, absmax)
	} else {
		absmax = b.copyInit(absmax)
	}
	ins := []string{x, b.copyInit(n.Input[1]), absmax}
	return g.Add(ortgraph.NodeSpec{Op: "MatMulBnb4", Domain: "com.microsoft", Inputs: ins, Attrs: n.Attribute, Name: name})[0], nil
}

// bnb4Of reads an eval graph's MatMulBnb4 weight back into quantize.Bnb4.
func bnb4Of(s *Source, n *onnxpb.NodeProto) (*quantize.Bnb4, error) {
	t, err := autodiff.Bnb4Type(n)
	if err != nil {
		return nil, err
	}
	p := &quantize.Bnb4{N: int(ortgraph.AttrInt(n, "N", 0)), K: int(ortgraph.AttrInt(n, "K", 0)), BlockSize: int(ortgraph.AttrInt(n, "block_size", 0)), Type: t}
	if p.BlockSize <= 0 || p.N <= 0 || p.K <= 0 || p.N*p.K%p.BlockSize != 0 {
		return nil, fmt.Errorf("eval graph node %q: MatMulBnb4 with N %d, K %d, block_size %d", n.Name, p.N, p.K, p.BlockSize)
	}
	if p.Data, err = s.Eval.TensorBytes(s.G.Initializer(n.Input[1])); err != nil {
		return nil, err
	}
	blocks := p.N * p.K / p.BlockSize
	if codes, scales, offset, ok := autodiff.Bnb4Nested(n); ok {
		nq := &quantize.NestedAbsmax{Blocks: blocks}
		if nq.Codes, err = s.Eval.TensorBytes(s.G.Initializer(codes)); err != nil {
			return nil, err
		}
		if nq.Scales, err = s.Eval.Floats(s.G.Initializer(scales)); err != nil {
			return nil, err
		}
		off, err := s.Eval.Floats(s.G.Initializer(offset))
		if err != nil || len(off) != 1 {
			return nil, fmt.Errorf("eval graph node %q: absmax offset %q: want one float (%v)", n.Name, offset, err)
		}
		nq.Offset = off[0]
		if len(nq.Codes) < blocks || len(nq.Scales)*quantize.NestedBlockSize < blocks {
			return nil, fmt.Errorf("eval graph node %q: %d absmax codes and %d scales for %d blocks", n.Name, len(nq.Codes), len(nq.Scales), blocks)
		}
		p.Nested = nq
	} else if p.Absmax, err = s.Eval.Floats(s.G.Initializer(n.Input[2])); err != nil {
		return nil, err
	}
	if len(p.Data) != p.N*p.K/2 || (p.Nested == nil && len(p.Absmax) != blocks) {
		return nil, fmt.Errorf("eval graph node %q: B has %d bytes and %d absmax values, [%d, %d] in blocks of %d needs %d and %d", n.Name, len(p.Data),
			len(p.Absmax), p.N, p.K, p.BlockSize, p.N*p.K/2, blocks)
	}
	return p, nil
}

// denseBnb4 is an NF4/FP4 weight as float32 [K, N] (bitsandbytes' table[code]·absmax).
func denseBnb4(s *Source, n *onnxpb.NodeProto) ([]float32, error) {
	p, err := bnb4Of(s, n)
	if err != nil {
		return nil, err
	}
	return quantize.Transpose(p.Dequantize(), p.N, p.K), nil
}
