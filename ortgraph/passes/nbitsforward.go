package passes

import (
	"bytes"
	"fmt"
	"reflect"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"google.golang.org/protobuf/proto"
)

// NBitsForward turns the forward products of a training graph's 4-bit Linears back into
// com.microsoft.MatMulNBits, leaving DequantizeLinear only where the backward pass needs W
// itself (dx = dy·W). It undoes DQForward for x·Wᵀ, on a graph that already has its backward
// pass (the device step); prepare runs it unless --dequantize-forward.
//
// Why: ONNX Runtime's int4 DequantizeLinear kernel is slow (H200, 8192×3072: 0.089 ms, a
// per-element division), while MatMulNBits dequantizes whole blocks into its scratch buffer
// (≈0.014 ms) before the same cuBLAS GEMM; with recomputation each weight is dequantized
// twice per step, once for the forward and once shared by the recomputed forward and dx.
// The cost: MatMulNBits reads the weight as a uint8 initializer [N, blocks, block/2], a
// second tensor beside DequantizeLinear's UINT4 view of the same bytes. On disk the bytes are
// stored once (SaveSharedData stores identical bytes once); in memory a session holds both
// unless it is given one buffer for both names (ortrun.Options.Initializers with
// Buffer.View), as train does. Measured on an H200 (Llama-3.2-3B shape, micro-batch 7):
// 4-bit dequantization 0.50 ms per layer instead of 0.69, step 209.9 ms instead of 214.1,
// same peak memory with the buffer shared (+1.4 GiB unshared).
//
// Pattern: MatMul(x, Transpose(W, perm [1, 0])) where W is DequantizedWeight's chain:
// DequantizeLinear(data, scales[, zero points], axis 0) of a UINT4 initializer
// [N·blocks, block], then Reshape to [N, blocks·block] and optionally a Slice to K. The
// scales may pass through Where(c, s, s) (recomputation's ordering gate): MatMulNBits reads
// s itself, since its x already waits for the gate. Checks: the zero points are absent from
// MatMulNBits' view, so they must all be 8 (symmetric quantization, MatMulNBits' default);
// asymmetric weights keep DequantizeLinear. Rewrite: the MatMul becomes
// MatMulNBits(x, B, s) in place (same name, output and metadata), with B the data as uint8
// [N, blocks, block/2] (a new initializer named <data>.nbits, paired with <data> in the
// result's Shared); dead chains are pruned.
var NBitsForward = &ortgraph.Pass{
	Name:       "nbits-forward",
	Doc:        "forward products of 4-bit Linears as MatMulNBits (DequantizeLinear kept only for dx)",
	ResultType: reflect.TypeFor[*NBitsForwardResult](),
	Run:        runNBitsForward,
}

// NBitsForwardResult says what NBitsForward did; Shared pairs each new uint8 initializer
// with the UINT4 initializer whose bytes it names.
type NBitsForwardResult struct {
	FusionResult
	Shared [][]string
}

func runNBitsForward(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	res := &NBitsForwardResult{}
	for _, n := range g.P.Node {
		if !isOp(n, "MatMul") || len(n.Input) != 2 {
			continue
		}
		m, why := matchNBitsForward(g, n)
		switch {
		case m != nil:
			if name, added := rewriteNBitsForward(g, n, m); added {
				res.Shared = append(res.Shared, []string{name, m.data})
			}
			res.Fused++
		case why != "":
			res.Skipped = append(res.Skipped, fmt.Sprintf("MatMul %q: %s", n.Name, why))
		}
	}
	if res.Fused > 0 {
		if g.M.OpsetVersion("com.microsoft") < 1 {
			g.M.SetOpset("com.microsoft", 1)
		}
		if err := g.TopoSort(); err != nil {
			return nil, err
		}
		g.Prune()
		// A weight whose dx nothing needs (the first layer's q, k and v) lost its
		// DequantizeLinear, and with it the UINT4 initializer: nothing to share.
		kept := res.Shared[:0]
		for _, pair := range res.Shared {
			if g.Initializer(pair[0]) != nil && g.Initializer(pair[1]) != nil {
				kept = append(kept, pair)
			}
		}
		res.Shared = kept
	}
	res.report(ctx, "nbits-forward", "4-bit forward products as MatMulNBits")
	return res, nil
}

// nbitsMatch is one forward product of a 4-bit Linear.
type nbitsMatch struct {
	data, scales string // UINT4 initializer [N·blocks, block]; 1-D scales
	n, k, blocks int64
	block        int64
}

// matchNBitsForward matches MatMul(x, Transpose(chain)) with chain a DequantizedWeight. It
// returns (nil, "") when n is no such product and (nil, reason) when it is one that stays.
func matchNBitsForward(g *ortgraph.Graph, mm *onnxpb.NodeProto) (*nbitsMatch, string) {
	t := g.Producer(mm.Input[1])
	if !isTranspose(t, 1, 0) {
		return nil, ""
	}
	var reshape, slice *onnxpb.NodeProto
	p, chain := autodiff.ShapeOnlySource(g, t.Input[0])
	for _, c := range chain {
		switch c.OpType {
		case "Slice":
			slice = c
		case "Reshape":
			reshape = c
		}
	}
	if !isDQ(p) || reshape == nil {
		return nil, ""
	}
	data := g.Initializer(p.Input[0])
	if data == nil || data.DataType != int32(onnxpb.TensorProto_UINT4) || len(data.Dims) != 2 || data.Dims[1]%2 != 0 {
		return nil, ""
	}
	if ortgraph.AttrInt(p, "axis", 1) != 0 {
		return nil, ""
	}
	scales := ungated(g, p.Input[1])
	if g.Initializer(scales) == nil {
		return nil, "the scales are not an initializer"
	}
	if len(p.Input) < 3 || p.Input[2] == "" {
		return nil, "no zero points: MatMulNBits would read 8"
	}
	zp := g.Initializer(p.Input[2])
	if zp == nil {
		return nil, "the zero points are not an initializer"
	}
	raw, err := g.M.TensorBytes(zp)
	if err != nil {
		return nil, "the zero points cannot be read: " + err.Error()
	}
	if len(raw) == 0 || !bytes.Equal(raw, bytes.Repeat([]byte{0x88}, len(raw))) {
		return nil, "asymmetric weights (zero points other than 8)"
	}
	shape, ok := g.ConstInts(reshape.Input[1])
	if !ok || len(shape) != 2 || shape[0] <= 0 || shape[1] <= 0 {
		return nil, "the Reshape to [N, K] is not constant"
	}
	m := &nbitsMatch{data: p.Input[0], scales: scales, n: shape[0], k: shape[1], block: data.Dims[1]}
	m.blocks = shape[1] / m.block
	if m.blocks*m.block != shape[1] || m.n*m.blocks != data.Dims[0] {
		return nil, fmt.Sprintf("data %v does not match [N, K] = %v", data.Dims, shape)
	}
	if slice != nil {
		end, ok := g.ConstInts(slice.Input[2])
		if !ok || len(end) != 1 || end[0] <= 0 || end[0] > m.k {
			return nil, "the Slice of padded K is not constant"
		}
		m.k = end[0]
	}
	return m, ""
}

// rewriteNBitsForward turns mm into MatMulNBits over the uint8 form of m's data, which it
// adds unless an earlier product of the same weight did; it returns its name.
func rewriteNBitsForward(g *ortgraph.Graph, mm *onnxpb.NodeProto, m *nbitsMatch) (name string, added bool) {
	name = m.data + ".nbits"
	if g.Initializer(name) == nil {
		b := proto.Clone(g.Initializer(m.data)).(*onnxpb.TensorProto)
		b.Name, b.DataType, b.Dims = name, int32(onnxpb.TensorProto_UINT8), []int64{m.n, m.blocks, m.block / 2}
		g.AddInitializer(b)
		added = true
	}
	mm.OpType, mm.Domain = "MatMulNBits", "com.microsoft"
	mm.Input = []string{mm.Input[0], name, m.scales}
	mm.Attribute = []*onnxpb.AttributeProto{
		ortgraph.AInt("K", m.k), ortgraph.AInt("N", m.n), ortgraph.AInt("bits", 4), ortgraph.AInt("block_size", m.block),
	}
	return name, added
}
