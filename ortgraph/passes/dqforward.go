package passes

import (
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"reflect"
)

// DQForward rewrites every 4-bit MatMulNBits of a training graph as
// MatMul(x, Transpose(W)), W = Reshape(DequantizeLinear(W₄)) [N, K] (plus a Slice when K is
// padded to whole blocks), over a UINT4 view of the same bytes: the 4-bit data as
// [N·Blocks, BlockSize], one row per block, dequantized per axis 0 with 1-D views of the
// scales and zero points (autodiff.DequantizedWeight).
//
// Why: the backward pass needs W (dx = dy·W), which MatMulNBits cannot give, so it reads
// the 4-bit bytes through DequantizeLinear. If the forward kept MatMulNBits, ONNX Runtime
// would hold two initializers of the same bytes (MatMulNBits' uint8 B and the UINT4 view):
// two copies of every 4-bit weight in GPU memory. With DequantizeLinear on both sides only
// the UINT4 view remains (and only the 1-D view of the scales: nothing reads MatMulNBits'
// own scales any more). The cost is small: MatMulNBits' CUDA kernel itself dequantizes to
// an fp16 scratch buffer and calls cuBLAS at training batch sizes, which is what this
// expresses (ONNX Runtime fuses the Transpose into the GEMM; the Reshape is a view). Per
// axis rather than blocked along K: the same values, but ONNX Runtime's per-axis CUDA kernel
// is faster (H200, Llama-3.2-3B's 8192×3072: 0.087 vs 0.132 ms, quantize.BenchmarkDequant).
// ONNX Runtime does not constant-fold DequantizeLinear (it keeps QDQ units), so no fp16
// copy of the weights is made at load time. The evaluation graph keeps MatMulNBits.
var DQForward = &ortgraph.Pass{
	Name:       "dq-forward",
	Doc:        "4-bit Linears as DequantizeLinear(UINT4) + MatMul so the training graph holds one copy of each 4-bit weight",
	Requires:   []*ortgraph.Pass{Quantize},
	ResultType: reflect.TypeFor[int](),
	Run:        runDQForward,
}

func runDQForward(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	n := 0
	for _, node := range append(g.P.Node[:0:0], g.P.Node...) {
		if node.OpType != "MatMulNBits" || node.Domain != "com.microsoft" {
			continue
		}
		saved := g.Scope
		g.Scope = node.Name + "/dq"
		first := len(g.P.Node)
		w, err := autodiff.DequantizedWeight(g, node)
		if err != nil {
			g.Scope = saved
			return nil, err
		}
		wt := g.Op("Transpose", []string{w}, ortgraph.AInts("perm", 1, 0))
		g.Scope = saved
		// The dequantization belongs to the Linear's module: it carries the exporter's
		// scope metadata, so Recompute puts it in the Linear's layer (and re-dequantizes
		// instead of keeping the forward's fp16 weight alive until the backward pass).
		for _, d := range g.P.Node[first:] {
			copyScope(d, node)
		}
		// Rewrite in place: the node keeps its name and output, so every reader and the
		// Linear records of FindLinears stay valid.
		node.OpType, node.Domain = "MatMul", ""
		node.Input = []string{node.Input[0], wt}
		node.Attribute = nil
		n++
	}
	if n > 0 {
		if err := g.TopoSort(); err != nil {
			return nil, err
		}
		g.Prune()
		ctx.Logf("dq-forward: %d 4-bit Linears as DequantizeLinear + MatMul", n)
	}
	return n, nil
}
