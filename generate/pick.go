package generate

import (
	"math"

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
// ONNX Runtime's CUDA ArgMax over the last axis gives each row one thread: one row of
// 128,256 logits took 2.98 ms on an H200 (ncu), half of a 3B decode step, and a 157-token
// prefill's rows 12.2 ms. (ReduceMax, Equal, Where and ReduceMin instead took ≈0 at batch 1
// but ≈14 ms a step at batch 8.) So the picker splits each row into chunks of L ≈ √vocab
// (padded with −inf) that ArgMax takes one thread each, then takes the ArgMax of the chunks'
// maxima:
//
//	x   = Reshape(Pad(logits, −inf), [rows, seq, C, L])
//	i   = ArgMax(x, axis 3)                 the first maximum of each chunk  [rows, seq, C, 1]
//	c   = ArgMax(GatherElements(x, i))      the first chunk holding the row's maximum
//	ids = c·L + i[c]
//
// Both ArgMaxes pick the first of equal values, so the result is the row's first maximum.
// Padding is never picked: −inf is greater than nothing.
func openPicker(opts ortrun.Options, vocab int) (*ortrun.Session, error) {
	b, err := proto.Marshal(&onnxpb.ModelProto{IrVersion: 10, Graph: pickerGraph(vocab),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}}})
	if err != nil {
		return nil, err
	}
	return ortrun.NewSessionFromBytes(b, ortrun.Options{Device: opts.Device, IntraOpThreads: 1})
}

// pickerGraph is openPicker's graph for a vocabulary of vocab tokens.
func pickerGraph(vocab int) *onnxpb.GraphProto {
	l := int64(math.Ceil(math.Sqrt(float64(vocab))))
	c := (int64(vocab) + l - 1) / l
	ints := func(name string, v int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INT, I: v}
	}
	node := func(op, out string, in []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
		return &onnxpb.NodeProto{OpType: op, Name: out, Input: in, Output: []string{out}, Attribute: attrs}
	}
	shape := func(name string, dims ...int64) *onnxpb.TensorProto {
		return ortgraph.Int64Tensor(name, []int64{int64(len(dims))}, dims)
	}
	return &onnxpb.GraphProto{Name: "ortq_argmax",
		Initializer: []*onnxpb.TensorProto{
			shape("pads", 0, 0, 0, 0, 0, c*l-int64(vocab)),
			ortgraph.FloatTensor("neg_inf", ortgraph.Float, nil, []float32{float32(math.Inf(-1))}),
			shape("chunked", 0, 0, c, l),
			shape("by_chunk", 0, 0, c),
			shape("per_row", 0, 0),
			ortgraph.Int64Tensor("chunk_len", nil, []int64{l}),
		},
		Node: []*onnxpb.NodeProto{
			node("Pad", "padded", []string{pickIn, "pads", "neg_inf"}),
			node("Reshape", "x", []string{"padded", "chunked"}),
			node("ArgMax", "i", []string{"x"}, ints("axis", 3), ints("keepdims", 1)),
			node("GatherElements", "chunk_max", []string{"x", "i"}, ints("axis", 3)),
			node("Reshape", "chunk_maxes", []string{"chunk_max", "by_chunk"}),
			node("ArgMax", "c", []string{"chunk_maxes"}, ints("axis", 2), ints("keepdims", 1)),
			node("Reshape", "chunk_firsts", []string{"i", "by_chunk"}),
			node("GatherElements", "within", []string{"chunk_firsts", "c"}, ints("axis", 2)),
			node("Mul", "chunk_start", []string{"c", "chunk_len"}),
			node("Add", "id", []string{"chunk_start", "within"}),
			node("Reshape", pickOut, []string{"id", "per_row"}),
		},
		Input:  []*onnxpb.ValueInfoProto{{Name: pickIn, Type: ortgraph.SymTensorType(ortgraph.Float, []string{"rows", "seq", "vocab"})}},
		Output: []*onnxpb.ValueInfoProto{{Name: pickOut, Type: ortgraph.SymTensorType(ortgraph.Int64, []string{"rows", "seq"})}},
	}
}
