package safetensors

import (
	"bufio"
	"encoding/binary"
	"errors"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/half"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "adapter.safetensors")
	f32 := []float32{1, -2.5, 3.25, float32(math.Inf(1)), 1e-30, 0}
	tensors := []Tensor{
		F32Tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", []int64{2, 3}, f32),
		F16Tensor("half", []int64{3}, []float32{1, 0.1, -65504}),
		BF16Tensor("brain", []int64{1, 2}, []float32{1, 3.14159}),
		I64Tensor("ids", []int64{3}, []int64{-100, 0, math.MaxInt64}),
		F32Tensor("scalar", []int64{}, []float32{42}),
		F32Tensor("empty", []int64{0, 3}, nil),
	}
	meta := map[string]string{"format": "pt", "ortq.step": "12"}
	if err := Write(path, tensors, meta); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Metadata, meta) {
		t.Errorf("metadata %v, want %v", got.Metadata, meta)
	}
	if len(got.Tensors) != len(tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(tensors))
	}
	for _, want := range tensors {
		g, ok := got.Get(want.Name)
		if !ok {
			t.Fatalf("tensor %q missing", want.Name)
		}
		if g.DType != want.DType || !reflect.DeepEqual(g.Shape, want.Shape) || string(g.Data) != string(want.Data) {
			t.Errorf("tensor %q: got %s %v %x, want %s %v %x", want.Name, g.DType, g.Shape, g.Data, want.DType, want.Shape, want.Data)
		}
	}
	a, _ := got.Get(tensors[0].Name)
	if v, _ := a.Float32s(); !reflect.DeepEqual(v, f32) {
		t.Errorf("F32 values %v, want %v", v, f32)
	}
	h, _ := got.Get("half")
	if v, _ := h.Float32s(); v[0] != 1 || v[1] != half.Float16ToFloat32(half.Float32ToFloat16(0.1)) || v[2] != -65504 {
		t.Errorf("F16 values %v", v)
	}
	ids, _ := got.Get("ids")
	if v, _ := ids.Int64s(); !reflect.DeepEqual(v, []int64{-100, 0, math.MaxInt64}) {
		t.Errorf("I64 values %v", v)
	}
	if _, err := ids.Float32s(); err == nil {
		t.Error("Float32s of an I64 tensor accepted")
	}
	// Data sections are 8-byte aligned after the header, as the format requires.
	raw, _ := os.ReadFile(path)
	if n := binary.LittleEndian.Uint64(raw); n%8 != 0 {
		t.Errorf("header length %d not a multiple of 8", n)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

// TestSafetensorsExactBytes pins the on-disk format for a one-tensor file to
// what the Python safetensors package writes for {"a": tensor([1.])}.
func TestSafetensorsExactBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.safetensors")
	if err := Write(path, []Tensor{F32Tensor("a", []int64{1}, []float32{1})}, nil); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	header := `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	header += strings.Repeat(" ", (8-len(header)%8)%8)
	want := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	want = append(want, header...)
	want = append(want, 0, 0, 0x80, 0x3f)
	if string(raw) != string(want) {
		t.Errorf("bytes\n%q\nwant\n%q", raw, want)
	}
}

func buildFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestSafetensorsCorrupt(t *testing.T) {
	eight := make([]byte, 8)
	tests := []struct {
		name string
		file []byte
		want []string
	}{
		{"too short", []byte{1, 2, 3}, []string{"too short"}},
		{"huge header length", binary.LittleEndian.AppendUint64(nil, 1<<40), []string{"exceeds", "limit"}},
		{"header past end", append(binary.LittleEndian.AppendUint64(nil, 1000), "{}"...), []string{"does not fit"}},
		{"not json", buildFile(`{"a":`, nil), []string{"not a JSON object"}},
		{"offsets mismatch shape", buildFile(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight), []string{`tensor "w"`, "needs 12"}},
		{"offsets past data", buildFile(`{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, eight), []string{`tensor "w"`, "outside"}},
		{"reversed offsets", buildFile(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, eight), []string{`tensor "w"`}},
		{"gap", buildFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}`, eight),
			[]string{`tensor "b"`, "gap or overlap"}},
		{"overlap", buildFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight),
			[]string{`tensor "b"`, "gap or overlap"}},
		{"trailing bytes", buildFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, eight), []string{"cover 4 data bytes", "has 8"}},
		{"unsupported dtype", buildFile(`{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`, eight), []string{`tensor "a"`, `"F64"`}},
		{"negative dim", buildFile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, eight), []string{`tensor "a"`, "negative"}},
		{"overflowing shape", buildFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}`, eight), []string{`tensor "a"`, "overflow"}},
		{"extra key", buildFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, eight), []string{`tensor "a"`}},
		{"bad metadata", buildFile(`{"__metadata__":{"k":1}}`, nil), []string{"__metadata__"}},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".safetensors")
			if err := os.WriteFile(path, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadFile(path)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestWriteSafetensorsErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.safetensors")
	for _, tc := range []struct {
		ts   []Tensor
		want string
	}{
		{[]Tensor{F32Tensor("a", []int64{1}, []float32{1}), F32Tensor("a", []int64{1}, []float32{2})}, "given twice"},
		{[]Tensor{F32Tensor("a", []int64{2}, []float32{1})}, "needs 8 bytes"},
		{[]Tensor{{Name: "a", DType: "F64", Shape: []int64{1}, Data: make([]byte, 8)}}, "unsupported dtype"},
		{[]Tensor{F32Tensor("__metadata__", []int64{1}, []float32{1})}, "invalid tensor name"},
	} {
		if err := Write(path, tc.ts, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Write error %v, want %q", err, tc.want)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Error("a failed write created the file")
	}
}

func TestWriteFileAtomicKeepsOldOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "report.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	err := fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error {
		_, _ = w.WriteString("partial new content")
		return boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("file now %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp file left: %v", entries)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "missing", "x"), 0o644, func(*bufio.Writer) error { return nil }); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

// FuzzParseSafetensors: no input may panic or allocate from a length field.
func FuzzParseSafetensors(f *testing.F) {
	f.Add(buildFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, []byte{0, 0, 128, 63}))
	f.Add(buildFile(`{"__metadata__":{"k":"v"},"b":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(binary.LittleEndian.AppendUint64(nil, 1<<62))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := Parse(b)
		if err != nil {
			return
		}
		for _, tn := range st.Tensors {
			if int64(len(tn.Data)) != tn.NumElements()*int64(tn.DType.Size()) {
				t.Fatalf("tensor %q: %d bytes for shape %v", tn.Name, len(tn.Data), tn.Shape)
			}
		}
	})
}
