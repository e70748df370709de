package passes

import (
	"fmt"
	"math"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// chunkedLoss replaces lm_head and the loss with a Loop over chunks of C tokens that
// computes, per chunk, logits = h·Wᵀ, the log-softmax cross-entropy and — in the
// training graph — the gradient of loss_sum·seed with respect to h:
//
//	d loss/d logits = (softmax(logits) − onehot(label))·valid·seed,  dh = d·W
//
// so the [tokens, vocab] logits (7×512×128256 fp32 = 1.8 GB for Llama 3) never exist
// whole: only one chunk's do, and the backward starts from dh. The loss is still HF's
// (shift by one, ignore −100, fp32 log-softmax).
func chunkedLoss(ctx *ortgraph.Context, c *Config, logits string) (*LossNames, error) {
	g := ctx.G
	ls := ctx.Result(FindLinears).(*Linears)
	var head *Linear
	for _, l := range ls.All {
		if l.Kind == "lm_head" {
			head = l
		}
	}
	if head == nil || head.Node.Output[0] != logits {
		return nil, fmt.Errorf("chunked loss needs logits computed directly by lm_head (a MatMul with a weight); use --loss-chunk 0")
	}
	if head.Node.OpType != "MatMul" {
		return nil, fmt.Errorf("chunked loss needs an unquantized lm_head; use --loss-chunk 0 or do not quantize lm_head")
	}
	for _, t := range c.Targets {
		if t == "lm_head" {
			return nil, fmt.Errorf("LoRA on lm_head is not supported with the chunked loss; use --loss-chunk 0")
		}
	}
	h := head.Node.Input[0]
	dt := g.ElemType(h)
	if dt == 0 {
		return nil, fmt.Errorf("the type of lm_head's input %q is unknown", h)
	}
	H, V := head.In, head.Out
	C := int64(c.LossChunk)
	// Tied heads read the embedding [V, H] through a Transpose: use the embedding itself.
	var wVH, wHV string
	if head.WeightIsOutIn {
		wVH = head.Weight
	} else {
		wHV = head.Weight
	}
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

	i64 := func(v ...int64) string { return g.ConstI64(v...) }
	hs := g.Op("Slice", []string{h, i64(0), i64(-1), i64(1)})
	lab := g.Op("Slice", []string{LabelsInput, i64(1), i64(math.MaxInt64), i64(1)})
	hf := g.Op("Reshape", []string{hs, i64(-1, H)})
	lf := g.Op("Reshape", []string{lab, i64(-1)})
	T := g.Op("Shape", []string{lf})
	M := g.Op("Div", []string{g.Op("Add", []string{T, i64(C - 1)}), i64(C)})
	pad := g.Op("Sub", []string{g.Op("Mul", []string{M, i64(C)}), T})
	hp := g.Op("Pad", []string{hf, g.Op("Concat", []string{i64(0, 0), pad, i64(0)}, ortgraph.AInt("axis", 0))})
	lp := g.Op("Pad", []string{lf, g.Op("Concat", []string{i64(0), pad}, ortgraph.AInt("axis", 0)), g.ScalarI64(IgnoreIndex)})
	valid := g.Op("Not", []string{g.Op("Equal", []string{lp, g.ScalarI64(IgnoreIndex)})})
	safe := g.Op("Where", []string{valid, lp, g.ScalarI64(0)})
	validF := g.Op("Cast", []string{valid}, ortgraph.AInt("to", int64(ortgraph.Float)))
	count := g.Op("Reshape", []string{g.Op("ReduceSum", []string{validF}, ortgraph.AInt("keepdims", 0)), i64(1)})
	trip := g.Op("Reshape", []string{M, i64()})
	acc0 := g.ConstF(ortgraph.Float, 0)
	acc0v := g.Op("Reshape", []string{acc0, i64(1)})

	// The body: iteration i handles rows [i·C, (i+1)·C) of the padded token matrix.
	body := &onnxpb.GraphProto{Name: "chunked_loss_body"}
	bg := ortgraph.NewSubgraph(g, body)
	bg.Scope = "chunked_loss/body"
	iter, condIn, accIn := bg.Fresh("iter"), bg.Fresh("cond_in"), bg.Fresh("acc_in")
	body.Input = []*onnxpb.ValueInfoProto{
		{Name: iter, Type: ortgraph.TensorType(ortgraph.Int64, []int64{})},
		{Name: condIn, Type: ortgraph.TensorType(ortgraph.Bool, []int64{})},
		{Name: accIn, Type: ortgraph.TensorType(ortgraph.Float, []int64{1})},
	}
	bi64 := func(v ...int64) string { // constants live in the body so it is self-contained
		return bg.Add(ortgraph.NodeSpec{Op: "Constant", Attrs: []ortgraph.Attr{ortgraph.ATensor("value", ortgraph.Int64Tensor("c", []int64{int64(len(v))}, v))}})[0]
	}
	start := bg.Op("Mul", []string{bg.Op("Reshape", []string{iter, bi64(1)}), bi64(C)})
	end := bg.Op("Add", []string{start, bi64(C)})
	ax0 := bi64(0)
	hc := bg.Op("Slice", []string{hp, start, end, ax0})
	yc := bg.Op("Slice", []string{safe, start, end, ax0})
	vc := bg.Op("Slice", []string{validF, start, end, ax0})
	var lg string
	if wVH != "" {
		lg = bg.Op("Gemm", []string{hc, wVH}, ortgraph.AInt("transB", 1))
	} else {
		lg = bg.Op("MatMul", []string{hc, wHV})
	}
	// Loss: nll = logsumexp(logits) − logits[label], in float32. Only one fp32 copy of
	// the chunk's logits exists (the Cast feeding the reduction).
	lgF := lg
	if dt != ortgraph.Float {
		lgF = bg.Op("Cast", []string{lg}, ortgraph.AInt("to", int64(ortgraph.Float)))
	}
	lse := bg.Op("ReduceLogSumExp", []string{lgF, bi64(1)}, ortgraph.AInt("keepdims", 1))
	idx := bg.Op("Unsqueeze", []string{yc, bi64(1)})
	pickedLogit := bg.Op("GatherElements", []string{lg, idx}, ortgraph.AInt("axis", 1))
	if dt != ortgraph.Float {
		pickedLogit = bg.Op("Cast", []string{pickedLogit}, ortgraph.AInt("to", int64(ortgraph.Float)))
	}
	picked := bg.Op("Sub", []string{pickedLogit, lse}) // log p(label), [C, 1]
	nll := bg.Op("ReduceSum", []string{bg.Op("Mul", []string{bg.Op("Squeeze", []string{picked, bi64(1)}), vc})}, ortgraph.AInt("keepdims", 1))
	accOut := bg.Op("Sub", []string{accIn, nll})
	condOut := bg.Op("Identity", []string{condIn})
	body.Output = []*onnxpb.ValueInfoProto{
		{Name: condOut, Type: ortgraph.TensorType(ortgraph.Bool, []int64{})},
		{Name: accOut, Type: ortgraph.TensorType(ortgraph.Float, []int64{1})},
	}
	nOut := 1
	if c.Train {
		// d loss_sum/d logits = softmax − onehot on counted rows, times the seed, computed
		// in the activation type: Softmax accumulates in float32 inside the kernel, and the
		// result feeds a half-precision GEMM anyway (as under PyTorch autocast).
		p := bg.Op("Softmax", []string{lg}, ortgraph.AInt("axis", 1))
		oneT := ortgraph.FloatTensor("one", dt, []int64{1}, []float32{1})
		pl := bg.Op("Sub", []string{bg.Op("GatherElements", []string{p, idx}, ortgraph.AInt("axis", 1)),
			bg.Add(ortgraph.NodeSpec{Op: "Constant", Attrs: []ortgraph.Attr{ortgraph.ATensor("value", oneT)}})[0]})
		d := bg.Op("ScatterElements", []string{p, idx, pl}, ortgraph.AInt("axis", 1))
		w := bg.Op("Mul", []string{bg.Op("Unsqueeze", []string{vc, bi64(1)}), LossScaleInput})
		if dt != ortgraph.Float {
			w = bg.Op("Cast", []string{w}, ortgraph.AInt("to", int64(dt)))
		}
		d = bg.Op("Mul", []string{d, w})
		var dh string
		if wVH != "" {
			dh = bg.Op("MatMul", []string{d, wVH})
		} else {
			dh = bg.Op("Gemm", []string{d, wHV}, ortgraph.AInt("transB", 1))
		}
		body.Output = append(body.Output, &onnxpb.ValueInfoProto{Name: dh, Type: ortgraph.TensorType(dt, []int64{C, H})})
		nOut = 2
	}
	loop := g.Add(ortgraph.NodeSpec{Op: "Loop", Inputs: []string{trip, "", acc0v}, NOut: nOut,
		Attrs: []ortgraph.Attr{{Name: "body", Type: onnxpb.AttributeProto_GRAPH, G: body}}})
	lossSum := g.Op("Identity", []string{loop[0]})
	loss := g.Op("Div", []string{lossSum, g.Op("Max", []string{count, g.ConstF(ortgraph.Float, 1)})})
	res := &LossNames{Logits: logits, Labels: LabelsInput, Loss: LossOutput, LossSum: LossSumOutput, Count: TokenCountOuput}
	if c.Train {
		dhf := g.Op("Slice", []string{g.Op("Reshape", []string{loop[1], i64(-1, H)}), i64(0), T, i64(0)})
		bs := g.Op("Slice", []string{g.Op("Shape", []string{hs}), i64(0), i64(2)})
		dhs := g.Op("Reshape", []string{dhf, g.Op("Concat", []string{bs, i64(H)}, ortgraph.AInt("axis", 0))})
		// The last position predicts nothing: its gradient is zero.
		dh := g.Op("Pad", []string{dhs, i64(0, 1), "", i64(1)})
		g.SetType(dh, g.Type(h))
		res.SeedValue, res.Seed = h, dh
	}
	// lm_head's output is no longer needed: drop it from the outputs.
	rename(g, lossSum, LossSumOutput)
	rename(g, count, TokenCountOuput)
	rename(g, loss, LossOutput)
	f1 := ortgraph.TensorType(ortgraph.Float, []int64{1})
	g.P.Output = []*onnxpb.ValueInfoProto{{Name: LossOutput, Type: f1}, {Name: LossSumOutput, Type: f1}, {Name: TokenCountOuput, Type: f1}}
	if !c.Train {
		g.Prune() // the training graph is pruned after the backward pass reads dh
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	ctx.Logf("loss: chunked over %d-token blocks (vocab %d never materialised whole)", C, V)
	return res, nil
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
