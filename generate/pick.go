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

// openPicker opens the one-node session that takes the argmax of logits [rows, seq, vocab]
// on the model's device: ids [rows, seq] int64, the first of equal maxima as argmax on the
// host (ArgMax's select_last_index 0).
func openPicker(opts ortrun.Options) (*ortrun.Session, error) {
	g := &onnxpb.GraphProto{Name: "ortq_argmax",
		Node: []*onnxpb.NodeProto{{OpType: "ArgMax", Input: []string{pickIn}, Output: []string{pickOut}, Name: "argmax",
			Attribute: []*onnxpb.AttributeProto{
				{Name: "axis", Type: onnxpb.AttributeProto_INT, I: 2},
				{Name: "keepdims", Type: onnxpb.AttributeProto_INT, I: 0}}}},
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
