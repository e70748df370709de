package quantize

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Test models that let ONNX Runtime dequantize a Packed its own ways (ort_test.go).

// dequantModel builds a graph with two outputs computed from p's bytes:
//
//	Y_mnb = com.microsoft.MatMulNBits(A, B=Data, Data scales, [ZeroPoints])   [K, N] = W_dqᵀ for A = I
//	Y_dq  = DequantizeLinear-21(UINT4 Data [N, Blocks·BlockSize], x_scale, UINT4 zero points,
//	        axis 1, block_size)                                                 [N, Blocks·BlockSize]
//
// A [K, K] and x_scale [N, Blocks] are graph inputs (so nothing is constant-folded away);
// MatMulNBits' scales are an initializer, as `prepare` writes them, so its prepacked path runs.
// With fp16, A, both scales and the outputs are fp16.
func dequantModel(p *Packed, fp16 bool) []byte {
	elem := onnxpb.TensorProto_FLOAT
	scaleBytes := f32Bytes(p.Scales)
	if fp16 {
		elem = onnxpb.TensorProto_FLOAT16
		scaleBytes = u16Bytes(p.ScalesFP16())
	}
	n, k, nb, bs := int64(p.N), int64(p.K), int64(p.Blocks), int64(p.BlockSize)

	mnbIn := []string{"A", "B", "mnb_scales"}
	inits := []*onnxpb.TensorProto{
		tensor("B", onnxpb.TensorProto_UINT8, []int64{n, nb, bs / 2}, p.Data),
		tensor("mnb_scales", elem, []int64{n, nb}, scaleBytes),
		tensor("dq_x", onnxpb.TensorProto_UINT4, []int64{n, nb * bs}, p.Data),
		tensor("dq_zp", onnxpb.TensorProto_UINT4, []int64{n, nb}, p.ZeroPointsUINT4()),
	}
	if p.ZeroPoints != nil {
		mnbIn = append(mnbIn, "mnb_zp")
		inits = append(inits, tensor("mnb_zp", onnxpb.TensorProto_UINT8, []int64{n, (nb + 1) / 2}, p.ZeroPoints))
	}
	g := &onnxpb.GraphProto{
		Name: "quantize_test",
		Node: []*onnxpb.NodeProto{
			{
				Name: "mnb", OpType: "MatMulNBits", Domain: "com.microsoft",
				Input: mnbIn, Output: []string{"Y_mnb"},
				Attribute: []*onnxpb.AttributeProto{
					intAttr("K", k), intAttr("N", n), intAttr("bits", 4), intAttr("block_size", bs),
				},
			},
			{
				Name: "dq", OpType: "DequantizeLinear",
				Input: []string{"dq_x", "dq_scales", "dq_zp"}, Output: []string{"Y_dq"},
				Attribute: []*onnxpb.AttributeProto{intAttr("axis", 1), intAttr("block_size", bs)},
			},
		},
		Initializer: inits,
		Input:       []*onnxpb.ValueInfoProto{valueInfo("A", elem, k, k), valueInfo("dq_scales", elem, n, nb)},
		Output:      []*onnxpb.ValueInfoProto{valueInfo("Y_mnb", elem, k, n), valueInfo("Y_dq", elem, n, nb*bs)},
	}
	m := &onnxpb.ModelProto{
		IrVersion:    10, // UINT4 needs IR 10
		ProducerName: "ortq quantize test",
		OpsetImport: []*onnxpb.OperatorSetIdProto{
			{Domain: "", Version: 21}, {Domain: "com.microsoft", Version: 1},
		},
		Graph: g,
	}
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func tensor(name string, dt onnxpb.TensorProto_DataType, dims []int64, raw []byte) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: name, DataType: int32(dt), Dims: dims, RawData: raw}
}

func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INT, I: v}
}

func valueInfo(name string, elem onnxpb.TensorProto_DataType, dims ...int64) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{
			Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d},
		})
	}
	return &onnxpb.ValueInfoProto{Name: name, Type: &onnxpb.TypeProto{
		Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: int32(elem), Shape: shape}},
	}}
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func u16Bytes(v []uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

func identity(k int) []float32 {
	a := make([]float32, k*k)
	for i := range k {
		a[i*k+i] = 1
	}
	return a
}

// ortCase is one Packed to check against ONNX Runtime.
type ortCase struct {
	name string
	n, k int
	opt  Options
}

var ortCases = []ortCase{
	{"sym K multiple of block", 24, 128, Options{BlockSize: 32}},
	{"asym K multiple of block, odd blocks", 17, 96, Options{BlockSize: 32, Asymmetric: true}},
	{"sym block 16", 8, 64, Options{BlockSize: 16}},
	{"asym block 256", 5, 512, Options{BlockSize: 256, Asymmetric: true}},
	{"sym K not multiple", 12, 100, Options{BlockSize: 32}},
	{"asym K not multiple", 9, 81, Options{BlockSize: 16, Asymmetric: true}},
	{"asym K below one block", 3, 20, Options{BlockSize: 64, Asymmetric: true}},
}

// ortWeights gives each case Gaussian weights with a few outliers and an exact zero.
func ortWeights(c ortCase) []float32 {
	w := gaussian(uint64(c.n*1000+c.k), c.n*c.k, 0.05)
	for i := 0; i < len(w); i += 29 {
		w[i] *= 20
	}
	w[len(w)/2] = 0
	return w
}
