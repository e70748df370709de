package passes

import (
	"fmt"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// OptimizerGraph is the device step's optimizer alone, for state vectors of size values: the
// step's inputs and outputs (state.<x> in, state.<x>.next out, step_scalars) and its
// accumulation, overflow check, clipping and AdamW (optimizerStep) over a micro-batch that
// adds nothing (zero gradients, loss and tokens). Run with the scalars keep = 1 and apply = 1
// it applies the step to the gradient sum and loss statistics already in the state, as the
// device step's last micro-batch does; data parallelism over processes runs it once a step,
// after the ranks' gradient sums are summed in device memory.
func OptimizerGraph(size int64) (*ortgraph.Model, error) {
	if size <= 0 {
		return nil, fmt.Errorf("optimizer graph: %d parameters", size)
	}
	m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, ProducerName: "ortq",
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}}, Graph: &onnxpb.GraphProto{Name: "ortq_optimizer"}}}
	g := ortgraph.NewGraph(m)
	in := addStateInputs(g, size)
	for _, o := range []string{LossSumOutput, TokenCountOutput} {
		g.AddInitializer(ortgraph.FloatTensor(o, ortgraph.Float, []int64{1}, []float32{0}))
	}
	g.Reindex()
	sc := splitScalars(g)
	zeros := g.Op("ConstantOfShape", []string{g.ConstI64(size)},
		ortgraph.ATensor("value", ortgraph.FloatTensor("value", ortgraph.Float, []int64{1}, []float32{0})))
	g.SetType(zeros, ortgraph.TensorType(ortgraph.Float, []int64{size}))
	setStateOutputs(g, optimizerStep(g, []stepParam{{name: "gradient", grad: zeros, shape: []int64{size}}}, in, sc), size)
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	g.Prune()
	return m, nil
}
