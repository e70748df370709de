package passes

import (
	"fmt"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// The automatic choice of blocks (prepare --loss-chunks -1): AutoLossChunks of them for a
// vocabulary of more than AutoLossChunksAbove entries, else the plain loss. Four, not eight:
// at the Llama-3.2-3B shape, micro-batch 7, eight blocks' lm_head GEMMs ran split-K (H100:
// 187.8 ms a step with four against 190.3 with eight, for 80 MB more).
const (
	AutoLossChunks      = 4
	AutoLossChunksAbove = 16384
)

// chunkedLoss replaces lm_head and the loss with K = c.Chunks blocks along the
// sequence axis, each computing logits = h·Wᵀ for its [batch, ⌈S/K⌉] positions, the
// log-softmax cross-entropy and — in the training graph — the gradient of
// loss_sum·seed with respect to h:
//
//	d loss/d logits = (softmax(logits) − onehot(label))·valid·seed,
//	dh = d·W = valid·seed·(softmax(logits)·W − W[label])
//
// so the [tokens, vocab] logits (7×512×128256 fp32 = 1.8 GB for Llama 3) never exist
// whole: one block's do, and the backward starts from dh. The loss is still HF's: position
// s predicts label s+1, the last position and labels of −100 count for nothing, and the
// log-softmax accumulates in float32 (each log-probability rounded once to the activation
// type; the sum over tokens is float32).
//
// Why this shape, measured on ONNX Runtime's CUDA provider: the blocks are unrolled (no
// Loop, which a CUDA graph cannot capture); the softmax statistics come from LogSoftmax and
// Softmax along the last axis (fast kernels) rather than ReduceMax/ReduceLogSumExp over the
// vocabulary axis, which ORT hands to cuDNN at ≈22 GB/s; the gradient row weights
// valid·seed are a [rows, 1] factor. The number of blocks is fixed and their length follows
// the batch (the sequence is padded to a multiple of K inside the graph), so memory is
// bounded by one block of logits whatever the micro-batch. Block k+1 reads h through
// Where(isnan(done_k[0]), h_k+1, h_k+1), where done_k is block k's last result: without
// that dependency ONNX Runtime may run every block's lm_head first and hold all logits; and
// a block's gradient waits the same way for its own loss value (lossBlock.build).
func chunkedLoss(ctx *ortgraph.Context, c LossOptions, logits string) (*LossNames, error) {
	g := ctx.G
	head, err := chunkableHead(ctx, c, logits)
	if err != nil {
		return nil, err
	}
	h := head.Node.Input[0]
	dt := g.ElemType(h)
	if dt == 0 {
		return nil, fmt.Errorf("the type of lm_head's input %q is unknown", h)
	}
	if g.Rank(h) != 3 && g.Rank(h) != -1 {
		return nil, fmt.Errorf("lm_head's input %q has rank %d; expected [batch, seq, hidden]", h, g.Rank(h))
	}
	H, V, K := head.In, head.Out, int64(c.Chunks)
	if c.Train {
		addInput(g, LossScaleInput, ortgraph.TensorType(ortgraph.Float, []int64{1}))
	}
	batchSeq := []string{"batch", "seq"}
	if d := g.SymDims(h); len(d) == 3 {
		batchSeq = d[:2]
	}
	addInput(g, LabelsInput, ortgraph.SymTensorType(ortgraph.Int64, batchSeq))
	saved := g.Scope
	g.Scope = "chunked_loss"
	defer func() { g.Scope = saved }()

	blk := splitBlocks(g, h, K)
	safe, validF, count := shiftedLabels(g, blk)
	split := func(v string) []string { // into the K blocks along the sequence
		return g.Add(ortgraph.NodeSpec{Op: "Split", Inputs: []string{v, blk.sizes}, NOut: int(K), Attrs: []ortgraph.Attr{ortgraph.AInt("axis", 1)}})
	}
	hs, ys := split(blk.padded), split(safe)
	var ws []string
	if c.Train {
		// Row weights valid·seed, in the activation type (they scale a half-precision GEMM
		// input, as under PyTorch autocast).
		w := g.Op("Mul", []string{validF, LossScaleInput})
		if dt != ortgraph.Float {
			w = g.Op("Cast", []string{w}, ortgraph.AInt("to", int64(dt)))
		}
		ws = split(w)
	}
	picked, dhs := emitBlocks(lossBlock{g: g, head: head, dt: dt, H: H}, hs, ys, ws)
	// Σ log p(label) over counted positions; padding and ignored rows picked index 0 and
	// are masked here.
	all := g.Op("Concat", picked, ortgraph.AInt("axis", 1)) // [B, K·c]
	nll := g.Op("ReduceSum", []string{g.Op("Mul", []string{all, validF})}, ortgraph.AInt("keepdims", 0))
	lossSum := g.Op("Neg", []string{g.Op("Reshape", []string{nll, g.ConstI64(1)})})
	loss := g.Op("Div", []string{lossSum, g.Op("Max", []string{count, g.ConstF(ortgraph.Float, 1)})})
	res := &LossNames{Logits: logits, Labels: LabelsInput, Loss: LossOutput, LossSum: LossSumOutput, Count: TokenCountOutput}
	if c.Train {
		dhp := g.Op("Concat", dhs, ortgraph.AInt("axis", 1)) // [B, K·c, H]
		dh := g.Op("Slice", []string{dhp, g.ConstI64(0), blk.seq, g.ConstI64(1)})
		g.SetType(dh, g.Type(h))
		res.SeedValue, res.Seed = h, dh
	}
	// lm_head's output is no longer needed: drop it from the outputs.
	rename(g, lossSum, LossSumOutput)
	rename(g, count, TokenCountOutput)
	rename(g, loss, LossOutput)
	f1 := ortgraph.TensorType(ortgraph.Float, []int64{1})
	g.P.Output = []*onnxpb.ValueInfoProto{{Name: LossOutput, Type: f1}, {Name: LossSumOutput, Type: f1}, {Name: TokenCountOutput, Type: f1}}
	if !c.Train {
		g.Prune() // the training graph is pruned after the backward pass reads dh
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	ctx.Logf("loss: lm_head and loss in %d sequence blocks (vocab %d never materialised whole)", K, V)
	return res, nil
}

// shiftedLabels prepares the labels of the blocks: position s is scored against
// labels[s+1]; the last position and the padding up to K·⌈S/K⌉ get −100. It returns the
// [B, K·c] labels (ignored ones as 0), their validity as float32 and the count of valid
// labels. All integer work stays on the GPU (Slice, Concat, Expand).
func shiftedLabels(g *ortgraph.Graph, blk blocks) (safe, validF, count string) {
	lab := g.Op("Slice", []string{LabelsInput, g.ConstI64(1), g.ConstI64(1 << 62), g.ConstI64(1)})
	fill := g.Op("Expand", []string{g.ConstI64(IgnoreIndex), g.Op("Concat", []string{blk.batch, g.Op("Add", []string{blk.pad, g.ConstI64(1)})},
		ortgraph.AInt("axis", 0))})
	lp := g.Op("Concat", []string{lab, fill}, ortgraph.AInt("axis", 1)) // [B, K·c]
	valid := g.Op("Not", []string{g.Op("Equal", []string{lp, g.ScalarI64(IgnoreIndex)})})
	safe = g.Op("Where", []string{valid, lp, g.ScalarI64(0)})
	validF = g.Op("Cast", []string{valid}, ortgraph.AInt("to", int64(ortgraph.Float)))
	count = g.Op("Reshape", []string{g.Op("ReduceSum", []string{validF}, ortgraph.AInt("keepdims", 0)), g.ConstI64(1)})
	return safe, validF, count
}

// emitBlocks builds the blocks one after the other (each waits for the previous one's
// last result) and returns each block's picked log-probabilities and, in training, its
// gradient with respect to h.
func emitBlocks(b lossBlock, hs, ys, ws []string) (picked, dhs []string) {
	done := ""
	for k := range hs {
		hk := hs[k]
		if done != "" {
			hk = waitFor(b.g, done, hk)
		}
		pk, dk := b.build(hk, ys[k], pick(ws, int64(k)))
		picked = append(picked, pk)
		done = pk
		if dk != "" {
			dhs = append(dhs, dk)
			done = dk
		}
	}
	return picked, dhs
}

// chunkableHead returns lm_head when the chunked loss can replace it.
func chunkableHead(ctx *ortgraph.Context, c LossOptions, logits string) (*Linear, error) {
	var head *Linear
	for _, l := range ortgraph.ResultOf[*Linears](ctx, FindLinears).All {
		if l.Kind == "lm_head" {
			head = l
		}
	}
	if head == nil || head.Node.Output[0] != logits {
		return nil, fmt.Errorf("chunked loss needs logits computed directly by lm_head (a MatMul with a weight); use --loss-chunks 0")
	}
	if head.Node.OpType != "MatMul" {
		return nil, fmt.Errorf("chunked loss needs an unquantized lm_head; use --loss-chunks 0 or do not quantize lm_head")
	}
	if c.LMHeadLoRA {
		return nil, fmt.Errorf("LoRA on lm_head is not supported with the chunked loss; use --loss-chunks 0")
	}
	return head, nil
}

func pick(v []string, k int64) string {
	if v == nil {
		return ""
	}
	return v[k]
}

// blocks is h [B, S, H] padded along the sequence to K·c positions, c = ⌈S/K⌉, with the
// integer shape values the chunked loss reuses (ONNX Runtime computes these on the CPU
// from Shape: shape arithmetic, no device copies).
type blocks struct {
	padded          string // [B, K·c, H]
	sizes           string // [K] of c, Split's sizes
	batch, seq, pad string // [1] each: B, S and K·c − S
}

func splitBlocks(g *ortgraph.Graph, h string, K int64) blocks {
	shape := g.Op("Shape", []string{h})
	b := blocks{
		batch: g.Op("Slice", []string{shape, g.ConstI64(0), g.ConstI64(1)}),
		seq:   g.Op("Slice", []string{shape, g.ConstI64(1), g.ConstI64(2)}),
	}
	c := g.Op("Div", []string{g.Op("Add", []string{b.seq, g.ConstI64(K - 1)}), g.ConstI64(K)})
	b.pad = g.Op("Sub", []string{g.Op("Mul", []string{c, g.ConstI64(K)}), b.seq})
	b.sizes = g.Op("Expand", []string{c, g.ConstI64(K)})
	pads := g.Op("Concat", []string{g.ConstI64(0, 0, 0, 0), b.pad, g.ConstI64(0)}, ortgraph.AInt("axis", 0))
	b.padded = g.Op("Pad", []string{h, pads})
	// The padded length is its own dimension: declaring h's symbolic "seq" here would let
	// ONNX Runtime believe the two buffers are the same size and reuse one for the other.
	if d := g.SymDims(h); len(d) == 3 {
		g.SetType(b.padded, ortgraph.SymTensorType(g.ElemType(h), []string{d[0], "?", d[2]}))
	}
	return b
}

// lossBlock builds one block of the chunked loss.
type lossBlock struct {
	g    *ortgraph.Graph
	head *Linear
	dt   int32
	H    int64
}

// build takes h [B, c, H], the safe labels [B, c] and, in the training graph, the row
// weights valid·seed [B, c]. It returns log p(label) [B, c] and dh [B, c, H] ("" without
// weights).
func (b lossBlock) build(h, y, w string) (picked, dh string) {
	g := b.g
	rows := g.ConstI64(-1, b.H)
	h2 := g.Op("Reshape", []string{h, rows}) // [B·c, H]
	var lg string
	if b.head.WeightIsOutIn { // tied heads: the embedding [V, H] itself
		lg = g.Op("Gemm", []string{h2, b.head.Weight}, ortgraph.AInt("transB", 1))
	} else {
		lg = g.Op("MatMul", []string{h2, b.head.Weight})
	}
	idx := g.Op("Reshape", []string{y, g.ConstI64(-1, 1)}) // [B·c, 1]
	// LogSoftmax in the activation type: the kernel accumulates in float32 and rounds each
	// log-probability once (≤ 2⁻¹¹ relative), and only the label's value is then taken to
	// float32 — no float32 copy of the [rows, vocab] block is written and read twice.
	logp := g.Op("LogSoftmax", []string{lg}, ortgraph.AInt("axis", -1))
	lp := g.Op("GatherElements", []string{logp, idx}, ortgraph.AInt("axis", 1))
	if b.dt != ortgraph.Float {
		lp = g.Op("Cast", []string{lp}, ortgraph.AInt("to", int64(ortgraph.Float)))
	}
	picked = g.Op("Reshape", []string{lp, g.Op("Shape", []string{y})})
	if w == "" {
		return picked, ""
	}
	// The gradient waits for this block's loss value: w is read through
	// Where(isnan(picked[0]), w, w). Without that dependency ONNX Runtime runs the value's
	// LogSoftmax after the whole backward pass (it only feeds the final outputs) and holds
	// every block's logits until then (8 × 110 MB on the Llama-3.2-3B shape at micro-batch 7).
	w = waitFor(g, picked, w)
	// dh = w·(softmax − onehot)·W = w·(softmax·W − W[label]): the GEMM reads the softmax
	// itself, exp(log p) of the log-probabilities the loss read (one elementwise pass instead
	// of a second softmax over the logits, which reads them three times; in half precision
	// each p is within 2⁻⁸ relative of the softmax's, which feeds a half-precision GEMM
	// anyway), and the label's row of W and the row weights apply to the [rows, H] product,
	// so no pass over the [rows, vocab] block subtracts the one-hot (a ScatterElements
	// copy) or scales it.
	p := g.Op("Exp", []string{logp})
	flat := g.Op("Reshape", []string{y, g.ConstI64(-1)}) // [B·c]
	var pw, wl string
	if b.head.WeightIsOutIn { // W [V, H]
		pw = g.Op("MatMul", []string{p, b.head.Weight})
		wl = g.Op("Gather", []string{b.head.Weight, flat}, ortgraph.AInt("axis", 0))
	} else { // W [H, V]
		pw = g.Op("Gemm", []string{p, b.head.Weight}, ortgraph.AInt("transB", 1))
		wl = g.Op("Transpose", []string{g.Op("Gather", []string{b.head.Weight, flat}, ortgraph.AInt("axis", 1))}, ortgraph.AInts("perm", 1, 0))
	}
	dh2 := g.Op("Mul", []string{g.Op("Sub", []string{pw, wl}), g.Op("Reshape", []string{w, g.ConstI64(-1, 1)})})
	dh = g.Op("Reshape", []string{dh2, g.Op("Shape", []string{h})})
	return picked, dh
}

// addInput declares a graph input unless it exists.
func addInput(g *ortgraph.Graph, name string, t *onnxpb.TypeProto) {
	for _, in := range g.P.Input {
		if in.Name == name {
			return
		}
	}
	g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: name, Type: t})
	g.Reindex()
}
