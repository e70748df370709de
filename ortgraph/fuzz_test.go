package ortgraph

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph/onnxpb"
	"google.golang.org/protobuf/proto"
)

// The ONNX reader is fed untrusted files: Load must return an error, never panic, for any
// bytes, and TensorBytes must neither allocate from an unchecked length field nor read
// outside the model's directory. `go test` runs the seeds (f.Add and testdata/fuzz);
// scripts/fuzz.sh runs the fuzzer.

// seedModel is a one-node model with an inline and an external initializer.
func seedModel() []byte {
	m := &onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Version: 21}},
		Graph: &onnxpb.GraphProto{
			Name: "g",
			Node: []*onnxpb.NodeProto{{OpType: "Add", Input: []string{"x", "w"}, Output: []string{"y"}}},
			Initializer: []*onnxpb.TensorProto{
				{Name: "w", DataType: Float, Dims: []int64{2}, FloatData: []float32{1, 2}},
				{Name: "e", DataType: Float, Dims: []int64{4}, DataLocation: onnxpb.TensorProto_EXTERNAL,
					ExternalData: []*onnxpb.StringStringEntryProto{{Key: "location", Value: "weights.bin"}, {Key: "offset", Value: "0"}, {Key: "length", Value: "16"}}},
			},
		},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// externalFixture is a model directory with weights.bin (bytes 0..63), a symlink inside
// it to weights.bin, a symlink leaving it, and a secret file beside it (0xEE bytes) that
// no tensor may ever read.
func externalFixture(tb testing.TB) (dir string) {
	root := tb.TempDir()
	dir = filepath.Join(root, "model")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	w := make([]byte, 64)
	for i := range w {
		w[i] = byte(i)
	}
	os.WriteFile(filepath.Join(dir, "weights.bin"), w, 0o644)
	os.WriteFile(filepath.Join(root, "secret.bin"), bytes.Repeat([]byte{0xEE}, 64), 0o644)
	os.Symlink(filepath.Join(root, "secret.bin"), filepath.Join(dir, "out.bin"))
	os.Symlink("weights.bin", filepath.Join(dir, "in.bin"))
	os.Symlink(root, filepath.Join(dir, "sub", "up"))
	return dir
}

func FuzzLoad(f *testing.F) {
	f.Add(seedModel())
	f.Add([]byte{})
	f.Add([]byte("not a protobuf at all"))
	f.Add([]byte{0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // graph field claiming 4 GiB
	dir := externalFixture(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "model.onnx")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Load(p)
		if err != nil {
			return
		}
		for _, init := range m.P.Graph.Initializer {
			buf, err := m.TensorBytes(init)
			if err == nil && bytes.Contains(buf, []byte{0xEE, 0xEE, 0xEE, 0xEE}) {
				t.Fatalf("initializer %q read the secret file outside the model directory", init.Name)
			}
		}
	})
}

// FuzzTensorBytes fuzzes one external initializer's location, offset, length, dims and
// data type.
func FuzzTensorBytes(f *testing.F) {
	f.Add("weights.bin", "0", "16", int64(4), int64(1), int32(Float))
	f.Add("weights.bin", "8", "", int64(2), int64(2), int32(Uint8))
	f.Add("../secret.bin", "0", "16", int64(4), int64(1), int32(Float))
	f.Add("/etc/passwd", "0", "4", int64(1), int64(1), int32(Float))
	f.Add("out.bin", "0", "16", int64(4), int64(1), int32(Float))
	f.Add("sub/up/secret.bin", "0", "4", int64(1), int64(1), int32(Float))
	f.Add("in.bin", "60", "4", int64(1), int64(1), int32(Float))
	f.Add("weights.bin", "9223372036854775807", "9223372036854775807", int64(1), int64(1), int32(Uint8))
	f.Add("weights.bin", "1", "", int64(-1), int64(8), int32(Float))
	f.Add("weights.bin", "0", "", int64(1)<<40, int64(1)<<40, int32(Double))
	dir := externalFixture(f)
	m := &Model{Dir: dir}
	f.Fuzz(func(t *testing.T, loc, off, length string, d0, d1 int64, dt int32) {
		tp := &onnxpb.TensorProto{Name: "t", DataType: dt, Dims: []int64{d0, d1}, DataLocation: onnxpb.TensorProto_EXTERNAL,
			ExternalData: []*onnxpb.StringStringEntryProto{{Key: "location", Value: loc}, {Key: "offset", Value: off}}}
		if length != "" {
			tp.ExternalData = append(tp.ExternalData, &onnxpb.StringStringEntryProto{Key: "length", Value: length})
		}
		buf, err := m.TensorBytes(tp)
		if err != nil {
			return
		}
		if len(buf) > 64 {
			t.Fatalf("read %d bytes from a 64-byte directory", len(buf))
		}
		if bytes.IndexByte(buf, 0xEE) >= 0 {
			t.Fatalf("location %q read the secret file outside the model directory", loc)
		}
		o, _ := strconv.ParseInt(off, 10, 64)
		for i, c := range buf {
			if int64(c) != o+int64(i) {
				t.Fatalf("location %q offset %s: byte %d is %d, not weights.bin's", loc, off, i, c)
			}
		}
	})
}

// TestExternalDataContained: locations that leave the model directory are refused by
// name; ones inside it (also through a symlink that stays inside) are read.
func TestExternalDataContained(t *testing.T) {
	dir := externalFixture(t)
	m := &Model{Dir: dir}
	abs, _ := filepath.Abs(filepath.Join(dir, "..", "secret.bin"))
	cases := []struct {
		loc  string
		want string // "" = allowed
	}{
		{"weights.bin", ""},
		{"in.bin", ""},
		{"./sub/../weights.bin", ""},
		{"../secret.bin", "leaves the model directory"},
		{"sub/../../secret.bin", "leaves the model directory"},
		{abs, "absolute"},
		{"/etc/passwd", "absolute"},
		{"out.bin", "resolves outside the model directory"},
		{"sub/up/secret.bin", "resolves outside the model directory"},
		{"missing.bin", "missing.bin"},
	}
	for _, c := range cases {
		tp := &onnxpb.TensorProto{Name: "t", DataType: Float, Dims: []int64{4}, DataLocation: onnxpb.TensorProto_EXTERNAL,
			ExternalData: []*onnxpb.StringStringEntryProto{{Key: "location", Value: c.loc}}}
		_, err := m.TensorBytes(tp)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.loc, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: error %v, want one containing %q", c.loc, err, c.want)
		}
	}
}

// TestExternalLengthBounded: length fields that overflow or exceed the file are errors
// before any allocation.
func TestExternalLengthBounded(t *testing.T) {
	dir := externalFixture(t)
	m := &Model{Dir: dir}
	cases := []struct {
		off, length string
		dims        []int64
		dt          int32
	}{
		{"9223372036854775807", "9223372036854775807", []int64{1}, Uint8},
		{"1", "9223372036854775807", []int64{1}, Uint8},
		{"0", "", []int64{1 << 40, 1 << 40}, Double},
		{"0", "", []int64{-1, 8}, Float},
		{"0", "", []int64{3037000500, 3037000500}, Float},
		{"0", "65", []int64{65}, Uint8},
	}
	for _, c := range cases {
		tp := &onnxpb.TensorProto{Name: "t", DataType: c.dt, Dims: c.dims, DataLocation: onnxpb.TensorProto_EXTERNAL,
			ExternalData: []*onnxpb.StringStringEntryProto{{Key: "location", Value: "weights.bin"}, {Key: "offset", Value: c.off}}}
		if c.length != "" {
			tp.ExternalData = append(tp.ExternalData, &onnxpb.StringStringEntryProto{Key: "length", Value: c.length})
		}
		if _, err := m.TensorBytes(tp); err == nil {
			t.Errorf("offset %s length %q dims %v: no error", c.off, c.length, c.dims)
		}
	}
}
