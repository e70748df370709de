package passes

import (
	"fmt"
	"math"
	"reflect"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Graph names of the loss inputs and outputs.
const (
	LabelsInput      = "labels"
	LossOutput       = "loss"
	LossSumOutput    = "loss_sum"
	TokenCountOutput = "token_count"
	IgnoreIndex      = -100
)

// LossNames is the result of the Loss pass.
type LossNames struct {
	Logits, Labels, Loss, LossSum, Count string
	// SeedValue and Seed, when set, start the backward pass at SeedValue with gradient
	// Seed (already scaled by loss_scale) instead of at LossSum with loss_scale.
	SeedValue, Seed string
}

// Loss appends Hugging Face's causal-LM loss: logits[:, :-1] against labels[:, 1:],
// labels of −100 ignored, cross-entropy computed in float32 (log-softmax), summed over
// counted tokens. Outputs loss_sum and token_count (so gradient accumulation can weight by
// tokens exactly) and their ratio loss. The logits output is dropped from the graph
// outputs so ONNX Runtime can free it as soon as the loss is computed.
var Loss = &ortgraph.Pass{
	Name:        "loss",
	Doc:         "append the causal-LM loss (shift by one, ignore_index −100, fp32 cross-entropy) with sum and count outputs",
	Requires:    []*ortgraph.Pass{FindLinears},
	OptionsType: reflect.TypeFor[LossOptions](),
	ResultType:  reflect.TypeFor[*LossNames](),
	Run:         runLoss,
}

func runLoss(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	c := ortgraph.OptionsOf[LossOptions](ctx)
	if len(g.P.Output) == 0 {
		return nil, fmt.Errorf("graph has no outputs")
	}
	logits := ""
	for _, o := range g.P.Output {
		if o.Name == "logits" {
			logits = o.Name
		}
	}
	if logits == "" {
		logits = g.P.Output[0].Name
	}
	if r := g.Rank(logits); r != 3 && r != -1 {
		return nil, fmt.Errorf("output %q has rank %d; expected logits [batch, seq, vocab]", logits, r)
	}
	for _, o := range g.P.Output {
		if o.Name != logits {
			return nil, fmt.Errorf("graph output %q: graphs with KV-cache or extra outputs are not supported; export with use_cache=False", o.Name)
		}
	}
	if g.Initializer(LabelsInput) != nil || g.Producer(LabelsInput) != nil {
		return nil, fmt.Errorf("graph already has a value named %q", LabelsInput)
	}
	if c.Chunks > 0 {
		return chunkedLoss(ctx, c, logits)
	}
	batchSeq := []string{"batch", "seq"}
	if d := g.SymDims(logits); len(d) == 3 {
		batchSeq = d[:2]
	}
	g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: LabelsInput, Type: ortgraph.SymTensorType(ortgraph.Int64, batchSeq)})
	g.Reindex()
	saved := g.Scope
	g.Scope = "loss"
	defer func() { g.Scope = saved }()

	lg := logits
	if dt := g.ElemType(logits); dt != ortgraph.Float {
		lg = g.Op("Cast", []string{logits}, ortgraph.AInt("to", int64(ortgraph.Float)))
	}
	ax1 := g.ConstI64(1)
	shifted := g.Op("Slice", []string{lg, g.ConstI64(0), g.ConstI64(-1), ax1})
	g.SetType(shifted, ortgraph.SymTensorType(ortgraph.Float, []string{batchSeq[0], "?", "?"}))
	lab := g.Op("Slice", []string{LabelsInput, ax1, g.ConstI64(math.MaxInt64), ax1})
	lsm := g.Op("LogSoftmax", []string{shifted}, ortgraph.AInt("axis", -1))
	g.SetType(lsm, g.Type(shifted))
	valid := g.Op("Not", []string{g.Op("Equal", []string{lab, g.ScalarI64(IgnoreIndex)})})
	safe := g.Op("Where", []string{valid, lab, g.ScalarI64(0)})
	idx := g.Op("Unsqueeze", []string{safe, g.ConstI64(-1)})
	picked := g.Op("GatherElements", []string{lsm, idx}, ortgraph.AInt("axis", -1))
	g.SetType(picked, ortgraph.SymTensorType(ortgraph.Float, []string{batchSeq[0], "?", "1"}))
	nll := g.Op("Squeeze", []string{picked, g.ConstI64(-1)})
	g.SetType(nll, ortgraph.SymTensorType(ortgraph.Float, []string{batchSeq[0], "?"}))
	validF := g.Op("Cast", []string{valid}, ortgraph.AInt("to", int64(ortgraph.Float)))
	masked := g.Op("Mul", []string{nll, validF})
	g.SetType(masked, ortgraph.SymTensorType(ortgraph.Float, []string{batchSeq[0], "?"}))
	// Sums keep one dimension: onnxruntime_go cannot hand back 0-d outputs.
	negSum := g.Op("ReduceSum", []string{masked, g.ConstI64(0, 1)}, ortgraph.AInt("keepdims", 0))
	g.SetType(negSum, ortgraph.TensorType(ortgraph.Float, nil))
	sum1 := g.Op("Reshape", []string{negSum, g.ConstI64(1)})
	g.SetType(sum1, ortgraph.TensorType(ortgraph.Float, []int64{1}))
	lossSum := g.Op("Neg", []string{sum1})
	count := g.Op("Reshape", []string{g.Op("ReduceSum", []string{validF, g.ConstI64(0, 1)}, ortgraph.AInt("keepdims", 0)), g.ConstI64(1)})
	loss := g.Op("Div", []string{lossSum, g.Op("Max", []string{count, g.ConstF(ortgraph.Float, 1)})})
	rename(g, lossSum, LossSumOutput)
	rename(g, count, TokenCountOutput)
	rename(g, loss, LossOutput)
	f1 := ortgraph.TensorType(ortgraph.Float, []int64{1})
	g.P.Output = []*onnxpb.ValueInfoProto{{Name: LossOutput, Type: f1}, {Name: LossSumOutput, Type: f1}, {Name: TokenCountOutput, Type: f1}}
	g.Reindex()
	return &LossNames{Logits: logits, Labels: LabelsInput, Loss: LossOutput, LossSum: LossSumOutput, Count: TokenCountOutput}, nil
}

// rename gives a node output a fixed public name.
func rename(g *ortgraph.Graph, old, new string) {
	p := g.Producer(old)
	for i, o := range p.Output {
		if o == old {
			p.Output[i] = new
		}
	}
	g.ReplaceUses(old, new)
	g.Reindex()
}
