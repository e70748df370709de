package generate

import (
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"google.golang.org/protobuf/proto"
)

// Names of the argmax session's input and output.
const (
	pickIn  = "logits"
	pickOut = "ids"
)

// openPicker opens the session that takes the argmax of logits [rows, seq, vocab] on the
// model's device: ids [rows, seq] int64, the first of equal maxima as argmax on the host
// (ArgMax's select_last_index 0).
//
// It is not ONNX ArgMax: ONNX Runtime's CUDA ArgMax over the last axis gives each row one
// thread, so one row of 128,256 logits took 2.98 ms on an H200 (ncu), half of a 3B decode
// step. Instead every reduction is a parallel one:
//
//	m   = ReduceMax(logits, axis 2)                  the row's maximum
//	idx = Where(logits == m, iota, vocab-1)          the positions holding it
//	ids = Cast<int64>(ReduceMin(idx, axis 2))        the first of them
//
// iota is float32, exact for every id below 2^24. A row with no position equal to its
// maximum (NaN logits) gives vocab-1, a valid id.
func openPicker(opts ortrun.Options, vocab int) (*ortrun.Session, error) {
	iota := make([]float32, vocab)
	for i := range iota {
		iota[i] = float32(i)
	}
	node := func(op, name string, in []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
		return &onnxpb.NodeProto{OpType: op, Name: name, Input: in, Output: []string{name}, Attribute: attrs}
	}
	ints := func(name string, v int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INT, I: v}
	}
	g := &onnxpb.GraphProto{Name: "ortq_argmax",
		Initializer: []*onnxpb.TensorProto{
			ortgraph.FloatTensor("iota", ortgraph.Float, []int64{int64(vocab)}, iota),
			ortgraph.FloatTensor("last", ortgraph.Float, nil, []float32{float32(vocab - 1)}),
			ortgraph.Int64Tensor("axis", []int64{1}, []int64{2}),
		},
		Node: []*onnxpb.NodeProto{
			node("ReduceMax", "max", []string{pickIn, "axis"}, ints("keepdims", 1)),
			node("Equal", "at_max", []string{pickIn, "max"}),
			node("Where", "where", []string{"at_max", "iota", "last"}),
			node("ReduceMin", "first", []string{"where", "axis"}, ints("keepdims", 0)),
			{OpType: "Cast", Name: "cast", Input: []string{"first"}, Output: []string{pickOut},
				Attribute: []*onnxpb.AttributeProto{ints("to", int64(ortgraph.Int64))}},
		},
		Input:  []*onnxpb.ValueInfoProto{{Name: pickIn, Type: ortgraph.SymTensorType(ortgraph.Float, []string{"rows", "seq", "vocab"})}},
		Output: []*onnxpb.ValueInfoProto{{Name: pickOut, Type: ortgraph.SymTensorType(ortgraph.Int64, []string{"rows", "seq"})}},
	}
	b, err := proto.Marshal(&onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}}, Graph: g})
	if err != nil {
		return nil, err
	}
	o := ortrun.Options{Device: opts.Device, IntraOpThreads: 1}
	return ortrun.NewSessionFromBytes(b, o)
}
