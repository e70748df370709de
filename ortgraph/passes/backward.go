package passes

import (
	"fmt"
	"reflect"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// LossScaleInput is the graph input seeding the backward pass: gradients are of
// loss_sum × loss_scale, so fp16 training can scale the loss (GradScaler) and gradient
// accumulation can divide by the total token count afterwards.
const LossScaleInput = "loss_scale"

// GradName is the graph output holding the gradient of a parameter.
func GradName(param string) string { return "grad." + param }

// BackwardResult is the result of the Backward pass.
type BackwardResult struct {
	*autodiff.Result
	// Forward holds the nodes that existed before the backward pass was built.
	Forward map[*onnxpb.NodeProto]bool
}

// Backward appends the gradients of loss_sum·loss_scale w.r.t. every LoRA tensor and
// exposes them as outputs named grad.<PEFT name>.
var Backward = &ortgraph.Pass{
	Name:        "backward",
	Doc:         "reverse-mode gradients of loss_sum·loss_scale w.r.t. the LoRA tensors (ortgraph/autodiff)",
	Requires:    []*ortgraph.Pass{LoRA, Loss},
	OptionsType: reflect.TypeFor[BackwardOptions](),
	ResultType:  reflect.TypeFor[*BackwardResult](),
	Run:         runBackward,
}

func runBackward(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	params := ortgraph.ResultOf[[]manifest.LoRAParam](ctx, LoRA)
	ln := ortgraph.ResultOf[*LossNames](ctx, Loss)
	addInput(g, LossScaleInput, ortgraph.TensorType(ortgraph.Float, []int64{1}))
	wrt := make([]string, len(params))
	for i, p := range params {
		wrt[i] = p.Name
	}
	from, seed := ln.LossSum, LossScaleInput
	if ln.SeedValue != "" {
		from, seed = ln.SeedValue, ln.Seed
	}
	forward := map[*onnxpb.NodeProto]bool{}
	for _, n := range g.P.Node {
		forward[n] = true
	}
	opt := ortgraph.OptionsOf[BackwardOptions](ctx)
	res, err := autodiff.Backward(g, from, wrt, autodiff.Options{Seed: seed, FusedKernels: opt.FusedKernels, FusedNormGrad: opt.FusedNormGrad})
	if err != nil {
		return nil, err
	}
	for _, p := range params {
		gv := res.Grads[p.Name]
		out := GradName(p.Name)
		// Gradients leave the graph in fp32 whatever the compute type.
		if g.ElemType(gv) != ortgraph.Float {
			gv = g.Op("Cast", []string{gv}, ortgraph.AInt("to", int64(ortgraph.Float)))
		}
		if g.Producer(gv) == nil {
			return nil, fmt.Errorf("gradient of %q is not computed by a node", p.Name)
		}
		id := g.Op("Identity", []string{gv})
		rename(g, id, out)
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: out, Type: ortgraph.TensorType(ortgraph.Float, p.Shape)})
	}
	g.Prune()
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	ctx.Logf("backward: %d forward nodes differentiated", res.Active)
	return &BackwardResult{Result: res, Forward: forward}, nil
}
