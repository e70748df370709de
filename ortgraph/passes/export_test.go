package passes

import "github.com/ortq/ortq/ortgraph"

// HalfSoftmaxGraph lets the external golden tests (package passes_test) build the same
// attention-idiom graphs as TestHalfSoftmax.
var HalfSoftmaxGraph = halfSoftmaxGraph

// RotaryGraph lets the golden tests build TestRotary's graphs.
var RotaryGraph = rotaryGraph

// GroupedKVGraph lets the golden tests build TestGroupedKV's graphs.
var GroupedKVGraph = groupedKVGraph

// DocMaskGraph lets the golden tests build the DocMask pass's graphs.
var DocMaskGraph = docMaskGraph

// RunOptions are the options of the passes that take any, for a test run of several of
// them (as prepare gives them); Options returns them by pass.
type RunOptions struct {
	Quantize  QuantizeOptions
	LoRA      LoRAOptions
	Loss      LossOptions
	Backward  BackwardOptions
	Recompute RecomputeOptions
}

// Options returns the options by pass, for ortgraph.RunPasses.
func (o RunOptions) Options() ortgraph.Options {
	return ortgraph.Options{Quantize: o.Quantize, LoRA: o.LoRA, Loss: o.Loss, Backward: o.Backward, Recompute: o.Recompute}
}
