package passes

import (
	"fmt"

	"github.com/ortq/ortq/manifest"
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
	typ := func(s string) *onnxpb.TypeProto {
		if s == manifest.StateStats {
			return ortgraph.TensorType(ortgraph.Float, []int64{manifest.StatsLen})
		}
		return ortgraph.TensorType(ortgraph.Float, []int64{size})
	}
	in := map[string]string{}
	for _, s := range States {
		in[s] = StateInput(s)
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: in[s], Type: typ(s)})
	}
	g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: StepScalarsInput, Type: ortgraph.TensorType(ortgraph.Float, []int64{manifest.StepScalars})})
	for _, o := range []string{LossSumOutput, TokenCountOutput} {
		g.AddInitializer(ortgraph.FloatTensor(o, ortgraph.Float, []int64{1}, []float32{0}))
	}
	g.Reindex()
	sc := splitScalars(g)
	zeros := g.Op("ConstantOfShape", []string{g.ConstI64(size)},
		ortgraph.ATensor("value", ortgraph.FloatTensor("value", ortgraph.Float, []int64{1}, []float32{0})))
	g.SetType(zeros, ortgraph.TensorType(ortgraph.Float, []int64{size}))
	out := optimizerStep(g, []stepParam{{name: "gradient", grad: zeros, shape: []int64{size}}}, in, sc)
	for _, s := range States {
		rename(g, out[s], StateOutput(s))
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: StateOutput(s), Type: typ(s)})
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	g.Prune()
	return m, nil
}
