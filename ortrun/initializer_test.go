package ortrun

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// sharedFourBitModel computes x·Wᵀ twice from one 4-bit weight W [2, 16] (one block of 16
// per row, symmetric, zero point 8): y8 = MatMulNBits(x, b8) reads it as uint8 [2, 1, 8],
// y4 = MatMul(x, Transpose(DequantizeLinear(w4, s, zp))) as UINT4 [2, 16], per axis 0. The
// graph holds zeros for both initializers; the tests supply them.
func sharedFourBitModel(t *testing.T) []byte {
	t.Helper()
	f32 := func(name string, dims []int64, v ...float32) *onnxpb.TensorProto {
		raw := make([]byte, 0, 4*len(v))
		for _, x := range v {
			b := math.Float32bits(x)
			raw = append(raw, byte(b), byte(b>>8), byte(b>>16), byte(b>>24))
		}
		return &onnxpb.TensorProto{Name: name, Dims: dims, DataType: int32(Float32), RawData: raw}
	}
	g := &onnxpb.GraphProto{
		Name:   "shared",
		Input:  []*onnxpb.ValueInfoProto{valueInfo_("x", Float32, 1, 16)},
		Output: []*onnxpb.ValueInfoProto{valueInfo_("y8", Float32, 1, 2), valueInfo_("y4", Float32, 1, 2)},
		Initializer: []*onnxpb.TensorProto{
			{Name: "b8", Dims: []int64{2, 1, 8}, DataType: int32(Uint8), RawData: make([]byte, 16)},
			{Name: "w4", Dims: []int64{2, 16}, DataType: int32(Uint4), RawData: make([]byte, 16)},
			{Name: "zp", Dims: []int64{2}, DataType: int32(Uint4), RawData: []byte{0x88}},
			f32("s", []int64{2}, 0.5, -0.25),
			f32("s2", []int64{2, 1}, 0.5, -0.25),
		},
		Node: []*onnxpb.NodeProto{
			{OpType: "MatMulNBits", Domain: "com.microsoft", Name: "mnb", Input: []string{"x", "b8", "s2"}, Output: []string{"y8"},
				Attribute: []*onnxpb.AttributeProto{intAttr("K", 16), intAttr("N", 2), intAttr("bits", 4), intAttr("block_size", 16)}},
			{OpType: "DequantizeLinear", Name: "dq", Input: []string{"w4", "s", "zp"}, Output: []string{"w"}, Attribute: []*onnxpb.AttributeProto{intAttr("axis", 0)}},
			{OpType: "Transpose", Name: "t", Input: []string{"w"}, Output: []string{"wt"},
				Attribute: []*onnxpb.AttributeProto{{Name: "perm", Type: onnxpb.AttributeProto_INTS, Ints: []int64{1, 0}}}},
			{OpType: "MatMul", Name: "mm", Input: []string{"x", "wt"}, Output: []string{"y4"}},
		},
	}
	b, err := proto.Marshal(&onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}, {Domain: "com.microsoft", Version: 1}},
		Graph:       g,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSharedInitializers: Options.Initializers gives one buffer to a session twice, as the
// uint8 B of MatMulNBits and as the UINT4 data of DequantizeLinear (Buffer.View), and both
// products equal x·Wᵀ computed here. The session reads the buffer itself, not a copy made at
// creation: after new codes are uploaded into it, the DequantizeLinear product follows them
// (MatMulNBits' CPU kernel prepacks its B at creation, so only its first result is checked).
func TestSharedInitializers(t *testing.T) {
	deviceTestLib(t)
	helper := mustSession(t, doubleModel(t), Options{IntraOpThreads: 1})
	buf, err := helper.NewBuffer(Uint8, []int64{16})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	b8, err := buf.View(Uint8, []int64{2, 1, 8})
	if err != nil {
		t.Fatal(err)
	}
	defer b8.Close()
	w4, err := buf.View(Uint4, []int64{2, 16})
	if err != nil {
		t.Fatal(err)
	}
	defer w4.Close()
	cp := NewCopier(Options{})
	defer cp.Close()
	codes := func(seed int) []uint8 { // two 4-bit codes per byte, low nibble first
		b := make([]uint8, 16)
		for i := range b {
			b[i] = uint8((i*7+seed)%16) | uint8((i*5+3*seed)%16)<<4
		}
		return b
	}
	x := make([]float32, 16)
	for i := range x {
		x[i] = float32(i%5) - 1.5
	}
	want := func(c []uint8) []float32 { return fourBitProduct(x, c) }
	upload := func(c []uint8) {
		if err := cp.Upload(buf, &Tensor{DType: Uint8, Shape: []int64{16}, Data: c}); err != nil {
			t.Fatal(err)
		}
	}
	upload(codes(1))
	// Optimizations off: on the CPU, ONNX Runtime would fuse the DequantizeLinear + MatMul
	// into its own 4-bit MatMul (quantizing x), which is not what this test is about.
	s := mustSession(t, sharedFourBitModel(t), Options{IntraOpThreads: 1, DisableOptimizations: true, Initializers: map[string]*Buffer{"b8": b8, "w4": w4}})
	for round, seed := range []int{1, 2} {
		c := codes(seed)
		if round > 0 {
			upload(c)
		}
		out := mustRun(t, s, map[string]*Tensor{"x": {DType: Float32, Shape: []int64{1, 16}, Data: x}})
		w := want(c)
		for _, name := range []string{"y4", "y8"} {
			if name == "y8" && round > 0 {
				continue
			}
			for i, g := range out[name].Data.([]float32) {
				if math.Abs(float64(g-w[i])) > 1e-5 {
					t.Errorf("round %d: %s[%d] = %g, want %g", round, name, i, g, w[i])
				}
			}
		}
	}
}

// fourBitProduct is x·Wᵀ for sharedFourBitModel's weight with 4-bit codes c (low nibble
// first) and scales 0.5, −0.25.
func fourBitProduct(x []float32, c []uint8) []float32 {
	s := []float32{0.5, -0.25}
	y := make([]float32, 2)
	for n := range 2 {
		for k := range 16 {
			i := n*16 + k
			q := int(c[i/2]>>(4*(i%2))) & 15
			y[n] += x[k] * float32(q-8) * s[n]
		}
	}
	return y
}

// TestLoadSharedInitializers: the model's uint8 and UINT4 initializers point at the same
// external bytes; LoadSharedInitializers copies them once into a buffer, and a session given
// its views computes both products from them. A group whose names point at different bytes
// is refused, naming them.
func TestLoadSharedInitializers(t *testing.T) {
	deviceTestLib(t)
	dir := t.TempDir()
	codes := make([]uint8, 16)
	for i := range codes {
		codes[i] = uint8(i*37 + 11)
	}
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), append(make([]byte, 64), codes...), 0o644); err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(sharedFourBitModel(t), &m); err != nil {
		t.Fatal(err)
	}
	ext := func(offset string) []*onnxpb.StringStringEntryProto {
		return []*onnxpb.StringStringEntryProto{{Key: "location", Value: "w.bin"}, {Key: "offset", Value: offset}, {Key: "length", Value: "16"}}
	}
	for _, init := range m.Graph.Initializer {
		if init.Name == "b8" || init.Name == "w4" {
			init.RawData, init.DataLocation, init.ExternalData = nil, onnxpb.TensorProto_EXTERNAL, ext("64")
		}
	}
	b, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sh, err := LoadSharedInitializers(path, [][]string{{"b8", "w4"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	if sh.Bytes != 256 || len(sh.Initializers) != 2 || sh.Initializers["w4"].DType != Uint4 {
		t.Fatalf("shared: %d bytes, %d views, w4 %v", sh.Bytes, len(sh.Initializers), sh.Initializers["w4"].DType)
	}
	s, err := NewSession(path, Options{IntraOpThreads: 1, DisableOptimizations: true, Initializers: sh.Initializers})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := make([]float32, 16)
	for i := range x {
		x[i] = float32(i%3) - 0.75
	}
	out := mustRun(t, s, map[string]*Tensor{"x": {DType: Float32, Shape: []int64{1, 16}, Data: x}})
	w := fourBitProduct(x, codes)
	for _, name := range []string{"y8", "y4"} {
		for i, g := range out[name].Data.([]float32) {
			if math.Abs(float64(g-w[i])) > 1e-5 {
				t.Errorf("%s[%d] = %g, want %g", name, i, g, w[i])
			}
		}
	}
	// Names that do not share their bytes are refused.
	m.Graph.Initializer[1].ExternalData = ext("0")
	if b, err = proto.Marshal(&m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSharedInitializers(path, [][]string{{"b8", "w4"}}, Options{}); err == nil || !strings.Contains(err.Error(),
		`"w4" does not name the bytes of "b8"`) {
		t.Errorf("different bytes: %v", err)
	}
}
