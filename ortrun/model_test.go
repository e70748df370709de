package ortrun

import (
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// tinyModel builds a one-graph ModelProto (opset 20, IR 10) for tests.
type tinyModel struct {
	g *onnxpb.GraphProto
}

func newTiny() *tinyModel { return &tinyModel{g: &onnxpb.GraphProto{Name: "tiny"}} }

// dims: int64 for a static axis, string for a dim_param.
func valueInfo_(name string, dt DType, dims ...any) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		switch d := d.(type) {
		case int:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(d)}})
		case string:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}})
		}
	}
	return &onnxpb.ValueInfoProto{Name: name, Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: int32(dt), Shape: shape}}}}
}

func (m *tinyModel) in(name string, dt DType, dims ...any) *tinyModel {
	m.g.Input = append(m.g.Input, valueInfo_(name, dt, dims...))
	return m
}

func (m *tinyModel) out(name string, dt DType, dims ...any) *tinyModel {
	m.g.Output = append(m.g.Output, valueInfo_(name, dt, dims...))
	return m
}

func (m *tinyModel) node(op, name string, ins, outs []string, attrs ...*onnxpb.AttributeProto) *tinyModel {
	m.g.Node = append(m.g.Node, &onnxpb.NodeProto{OpType: op, Name: name, Input: ins, Output: outs, Attribute: attrs})
	return m
}

func (m *tinyModel) initF32(name string, dims []int64, vals []float32) *tinyModel {
	raw := make([]byte, 0, 4*len(vals))
	for _, v := range vals {
		b := math.Float32bits(v)
		raw = append(raw, byte(b), byte(b>>8), byte(b>>16), byte(b>>24))
	}
	m.g.Initializer = append(m.g.Initializer, &onnxpb.TensorProto{Name: name, Dims: dims, DataType: int32(Float32), RawData: raw})
	return m
}

func (m *tinyModel) bytes(t testing.TB) []byte {
	t.Helper()
	b, err := proto.Marshal(&onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 20}},
		Graph:       m.g,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INT, I: v}
}
