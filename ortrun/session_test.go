package ortrun

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

func mustSession(t *testing.T, model []byte, opts Options) *Session {
	t.Helper()
	s, err := NewSessionFromBytes(model, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func mustRun(t *testing.T, s *Session, in map[string]*Tensor, outs ...string) map[string]*Tensor {
	t.Helper()
	res, err := s.Run(in, outs)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func f32(shape []int64, v ...float32) *Tensor { return &Tensor{DType: Float32, Shape: shape, Data: v} }

func TestRunAddFloat32(t *testing.T) {
	testLib(t)
	// y = (a + b) * b with a dynamic batch axis; z = a + b also returned.
	m := newTiny().in("a", Float32, "batch", 3).in("b", Float32, "batch", 3).
		out("y", Float32, "batch", 3).out("z", Float32, "batch", 3).
		node("Add", "add0", []string{"a", "b"}, []string{"z"}).
		node("Mul", "mul0", []string{"z", "b"}, []string{"y"}).bytes(t)
	s := mustSession(t, m, Options{IntraOpThreads: 1})
	if got, want := s.InputNames(), []string{"a", "b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("InputNames = %q, want %q", got, want)
	}
	if got, want := s.OutputNames(), []string{"y", "z"}; !reflect.DeepEqual(got, want) {
		t.Errorf("OutputNames = %q, want %q", got, want)
	}
	for _, batch := range []int64{1, 2, 5} { // the dynamic axis really varies
		a, b := make([]float32, batch*3), make([]float32, batch*3)
		for i := range a {
			a[i], b[i] = float32(i), float32(i%3)+0.5
		}
		res := mustRun(t, s, map[string]*Tensor{"a": f32([]int64{batch, 3}, a...), "b": f32([]int64{batch, 3}, b...)}, "y")
		if len(res) != 1 || res["y"] == nil {
			t.Fatalf("asked for y only, got %v", res)
		}
		y := res["y"]
		if y.DType != Float32 || !reflect.DeepEqual(y.Shape, []int64{batch, 3}) {
			t.Fatalf("y is %s %v", y.DType, y.Shape)
		}
		for i, v := range y.Data.([]float32) {
			if want := (a[i] + b[i]) * b[i]; v != want {
				t.Fatalf("batch %d: y[%d] = %v, want %v", batch, i, v, want)
			}
		}
	}
	// No outputs named: all of them.
	res := mustRun(t, s, map[string]*Tensor{"a": f32([]int64{1, 3}, 1, 2, 3), "b": f32([]int64{1, 3}, 1, 1, 1)})
	if len(res) != 2 || !reflect.DeepEqual(res["z"].Data, []float32{2, 3, 4}) {
		t.Fatalf("all outputs: %v", res)
	}
}

func TestRunMatMul(t *testing.T) {
	testLib(t)
	// float32 against an initializer (as the training graphs hold weights).
	w := []float32{1, 2, 3, 4, 5, 6} // [3, 2]
	m := newTiny().in("x", Float32, "n", 3).out("y", Float32, "n", 2).
		initF32("w", []int64{3, 2}, w).node("MatMul", "mm", []string{"x", "w"}, []string{"y"}).bytes(t)
	s := mustSession(t, m, Options{})
	y := mustRun(t, s, map[string]*Tensor{"x": f32([]int64{2, 3}, 1, 0, -1, 0.5, 0.25, 2)})["y"]
	want := []float32{1 - 5, 2 - 6, 0.5 + 0.75 + 10, 1 + 1 + 12}
	if !reflect.DeepEqual(y.Data, want) || !reflect.DeepEqual(y.Shape, []int64{2, 2}) {
		t.Fatalf("float32 MatMul = %v %v, want %v [2 2]", y.Shape, y.Data, want)
	}

	// float64, both operands inputs.
	m64 := newTiny().in("a", Float64, 2, 2).in("b", Float64, 2, 1).out("y", Float64, 2, 1).
		node("MatMul", "mm", []string{"a", "b"}, []string{"y"}).bytes(t)
	s64 := mustSession(t, m64, Options{})
	y64 := mustRun(t, s64, map[string]*Tensor{
		"a": {DType: Float64, Shape: []int64{2, 2}, Data: []float64{1, 1e-12, 3, 4}},
		"b": {DType: Float64, Shape: []int64{2, 1}, Data: []float64{1, 1}},
	})["y"]
	if got := y64.Data.([]float64); got[0] != 1+1e-12 || got[1] != 7 { // 1+1e-12 is not representable in float32
		t.Fatalf("float64 MatMul = %v", got)
	}
}

func TestRunFloat16(t *testing.T) {
	testLib(t)
	// x (float32) → Cast → h (float16, dynamic axis named like the input's) and back.
	m := newTiny().in("x", Float32, "n").in("hin", Float16, 4).
		out("h", Float16, "n").out("back", Float32, 4).
		node("Cast", "to16", []string{"x"}, []string{"h"}, intAttr("to", int64(Float16))).
		node("Cast", "to32", []string{"hin"}, []string{"back"}, intAttr("to", int64(Float32))).bytes(t)
	s := mustSession(t, m, Options{})
	xs := []float32{1, -2.5, 0.1, 65504, 70000, 1e-8, 3.14159}
	hin := []uint16{0x3c00, 0xc000, 0x0001, 0x7c00}
	res := mustRun(t, s, map[string]*Tensor{
		"x":   f32([]int64{int64(len(xs))}, xs...),
		"hin": {DType: Float16, Shape: []int64{4}, Data: hin},
	})
	h := res["h"]
	if h.DType != Float16 || !reflect.DeepEqual(h.Shape, []int64{int64(len(xs))}) {
		t.Fatalf("h is %s %v", h.DType, h.Shape)
	}
	for i, bits := range h.Data.([]uint16) {
		if want := Float32ToFloat16(xs[i]); bits != want {
			t.Errorf("Cast(%v) to float16 = %#04x, Float32ToFloat16 gives %#04x", xs[i], bits, want)
		}
	}
	wantBack := []float32{1, -2, float32(math.Ldexp(1, -24)), float32(math.Inf(1))}
	if got := res["back"].Data.([]float32); !reflect.DeepEqual(got, wantBack) {
		t.Errorf("float16 input cast back = %v, want %v", got, wantBack)
	}
}

func TestRunIntegerAndBool(t *testing.T) {
	testLib(t)
	m := newTiny().in("ids", Int64, "b", "s").in("off", Int64, 1).in("i32", Int32, 2).in("u8", Uint8, 2).
		out("sum", Int64, "b", "s").out("shape", Int64, 2).out("pos", Bool, "b", "s").
		out("i32x2", Int32, 2).out("u8x2", Uint8, 2).
		node("Add", "add", []string{"ids", "off"}, []string{"sum"}).
		node("Shape", "shape", []string{"ids"}, []string{"shape"}).
		node("Greater", "gt", []string{"ids", "off"}, []string{"pos"}).
		node("Add", "add32", []string{"i32", "i32"}, []string{"i32x2"}).
		node("Add", "add8", []string{"u8", "u8"}, []string{"u8x2"}).bytes(t)
	s := mustSession(t, m, Options{})
	res := mustRun(t, s, map[string]*Tensor{
		"ids": {DType: Int64, Shape: []int64{2, 3}, Data: []int64{0, 5, 128255, -100, 7, 1 << 40}},
		"off": {DType: Int64, Shape: []int64{1}, Data: []int64{6}},
		"i32": {DType: Int32, Shape: []int64{2}, Data: []int32{-3, 1 << 29}},
		"u8":  {DType: Uint8, Shape: []int64{2}, Data: []uint8{7, 200}},
	})
	check := func(name string, want any) {
		t.Helper()
		if got := res[name].Data; !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("sum", []int64{6, 11, 128261, -94, 13, 1<<40 + 6})
	check("shape", []int64{2, 3})
	check("pos", []bool{false, false, true, false, true, true})
	check("i32x2", []int32{-6, 1 << 30})
	check("u8x2", []uint8{14, 144}) // 400 mod 256
}

func TestRunScalars(t *testing.T) {
	testLib(t)
	// A 0-d input and a 0-d output (ReduceSum over everything, keepdims=0), which
	// onnxruntime_go cannot allocate itself.
	m := newTiny().in("x", Float32, 2, 2).in("k", Float32).out("total", Float32).out("scaled", Float32, 2, 2).
		node("ReduceSum", "sum", []string{"x"}, []string{"total"}, intAttr("keepdims", 0)).
		node("Mul", "scale", []string{"x", "k"}, []string{"scaled"}).bytes(t)
	s := mustSession(t, m, Options{})
	res := mustRun(t, s, map[string]*Tensor{"x": f32([]int64{2, 2}, 1, 2, 3, 4.5), "k": f32(nil, 2)})
	if tot := res["total"]; len(tot.Shape) != 0 || !reflect.DeepEqual(tot.Data, []float32{10.5}) {
		t.Errorf("total = %v %v, want [] [10.5]", tot.Shape, tot.Data)
	}
	if !reflect.DeepEqual(res["scaled"].Data, []float32{2, 4, 6, 9}) {
		t.Errorf("scaled = %v", res["scaled"].Data)
	}
}

func TestRunConcurrent(t *testing.T) {
	testLib(t)
	m := newTiny().in("a", Float32, "n").out("y", Float32, "n").
		node("Add", "add", []string{"a", "a"}, []string{"y"}).bytes(t)
	s := mustSession(t, m, Options{IntraOpThreads: 1})
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				v := float32(g*1000 + i)
				res, err := s.Run(map[string]*Tensor{"a": f32([]int64{2}, v, -v)}, nil)
				if err != nil {
					errs <- err.Error()
					return
				}
				if got := res["y"].Data.([]float32); got[0] != 2*v || got[1] != -2*v {
					errs <- "wrong result under concurrency"
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestExternalDataFromPath(t *testing.T) {
	testLib(t)
	// Weights in a side file next to the model, as prepare writes them.
	dir := t.TempDir()
	w := []float32{2, 3}
	raw := []byte{}
	for _, v := range w {
		b := math.Float32bits(v)
		raw = append(raw, byte(b), byte(b>>8), byte(b>>16), byte(b>>24))
	}
	if err := os.WriteFile(filepath.Join(dir, "weights.bin"), append(make([]byte, 16), raw...), 0o644); err != nil {
		t.Fatal(err)
	}
	tm := newTiny().in("x", Float32, 2).out("y", Float32, 2).node("Mul", "mul", []string{"x", "w"}, []string{"y"})
	tm.g.Initializer = append(tm.g.Initializer, &onnxpb.TensorProto{
		Name: "w", Dims: []int64{2}, DataType: int32(Float32), DataLocation: onnxpb.TensorProto_EXTERNAL,
		ExternalData: []*onnxpb.StringStringEntryProto{{Key: "location", Value: "weights.bin"}, {Key: "offset", Value: "16"}, {Key: "length", Value: "8"}},
	})
	path := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(path, tm.bytes(t), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // external data must resolve relative to the model, not the cwd
	s, err := NewSession(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	y := mustRun(t, s, map[string]*Tensor{"x": f32([]int64{2}, 10, 100)})["y"]
	if !reflect.DeepEqual(y.Data, []float32{20, 300}) {
		t.Fatalf("y = %v", y.Data)
	}
}

func TestProfiling(t *testing.T) {
	testLib(t)
	dir := t.TempDir()
	m := newTiny().in("a", Float32, 1).out("y", Float32, 1).node("Neg", "neg", []string{"a"}, []string{"y"}).bytes(t)
	s, err := NewSessionFromBytes(m, Options{ProfilePrefix: filepath.Join(dir, "prof")})
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, s, map[string]*Tensor{"a": f32([]int64{1}, 1)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "prof*.json"))
	if len(files) != 1 {
		t.Fatalf("profile files after Close: %v", files)
	}
	b, _ := os.ReadFile(files[0])
	if !strings.Contains(string(b), `"provider"`) || !strings.Contains(string(b), "neg") {
		t.Errorf("profile does not list node neg with its provider: %.300s", b)
	}
}

func TestRunErrors(t *testing.T) {
	testLib(t)
	m := newTiny().in("a", Float32, "n", 2).in("b", Float32, "n", 2).out("y", Float32, "n", 2).
		node("Add", "add", []string{"a", "b"}, []string{"y"}).bytes(t)
	s := mustSession(t, m, Options{})
	ok := f32([]int64{1, 2}, 1, 2)
	tests := []struct {
		name    string
		in      map[string]*Tensor
		outs    []string
		wantErr []string
	}{
		{"missing input", map[string]*Tensor{"a": ok}, nil, []string{`missing inputs ["b"]`}},
		{"extra input", map[string]*Tensor{"a": ok, "b": ok, "c": ok}, nil, []string{`"c"`, "not graph inputs"}},
		{"unknown output", map[string]*Tensor{"a": ok, "b": ok}, []string{"nope"}, []string{`"nope"`, "not graph outputs"}},
		{"wrong dtype", map[string]*Tensor{"a": ok, "b": {DType: Float64, Shape: []int64{1, 2}, Data: []float64{1, 2}}}, nil,
			[]string{`input "b"`, "wants float32, got float64"}},
		{"dtype vs data", map[string]*Tensor{"a": ok, "b": {DType: Float32, Shape: []int64{1, 2}, Data: []int64{1, 2}}}, nil,
			[]string{`input "b"`, "DType is float32"}},
		{"short data", map[string]*Tensor{"a": ok, "b": f32([]int64{2, 2}, 1, 2)}, nil, []string{`input "b"`, "needs 4 elements"}},
		{"wrong rank", map[string]*Tensor{"a": ok, "b": f32([]int64{2}, 1, 2)}, nil, []string{`input "b"`, "rank 2"}},
		{"shape ORT rejects", map[string]*Tensor{"a": ok, "b": f32([]int64{1, 3}, 1, 2, 3)}, nil, []string{"run:"}},
		{"unsupported data", map[string]*Tensor{"a": ok, "b": {DType: Float32, Shape: []int64{1}, Data: []string{"x"}}}, nil, []string{"not supported"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Run(tc.in, tc.outs)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Still usable after the errors, then closed.
	mustRun(t, s, map[string]*Tensor{"a": ok, "b": ok})
	s2 := mustSession(t, m, Options{})
	s2.Close()
	if _, err := s2.Run(map[string]*Tensor{"a": ok, "b": ok}, nil); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("run after Close: %v", err)
	}
}

func TestFloat16DynamicOutputNeedsNamedAxes(t *testing.T) {
	testLib(t)
	// The output's axis "m" names no input axis, so its size is unknown before the run.
	m := newTiny().in("x", Float32, "n").out("h", Float16, "m").
		node("Cast", "c", []string{"x"}, []string{"h"}, intAttr("to", int64(Float16))).bytes(t)
	s := mustSession(t, m, Options{})
	_, err := s.Run(map[string]*Tensor{"x": f32([]int64{2}, 1, 2)}, nil)
	if err == nil || !strings.Contains(err.Error(), `output "h"`) || !strings.Contains(err.Error(), "float32") {
		t.Fatalf("err = %v", err)
	}
}

func TestNewSessionErrors(t *testing.T) {
	testLib(t)
	good := newTiny().in("a", Float32, 1).out("y", Float32, 1).node("Neg", "neg", []string{"a"}, []string{"y"}).bytes(t)
	badOp := newTiny().in("a", Float32, 1).out("y", Float32, 1).node("NoSuchOp", "bad", []string{"a"}, []string{"y"}).bytes(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "garbage.onnx"), []byte("this is not a protobuf \xff\xff\xff\xff"), 0o644)
	os.WriteFile(filepath.Join(dir, "empty.onnx"), nil, 0o644)
	for _, tc := range []struct {
		name string
		open func() (*Session, error)
		want string
	}{
		{"empty bytes", func() (*Session, error) { return NewSessionFromBytes(nil, Options{}) }, "empty"},
		{"garbage bytes", func() (*Session, error) {
			return NewSessionFromBytes([]byte("\x0a\xff\xff\xff\xff\x0f garbage"), Options{})
		}, "not an ONNX model"},
		{"truncated model", func() (*Session, error) { return NewSessionFromBytes(good[:len(good)-7], Options{}) }, "model"},
		{"unknown op", func() (*Session, error) { return NewSessionFromBytes(badOp, Options{}) }, "NoSuchOp"},
		{"missing file", func() (*Session, error) { return NewSession(filepath.Join(dir, "nope.onnx"), Options{}) }, "nope.onnx"},
		{"empty file", func() (*Session, error) { return NewSession(filepath.Join(dir, "empty.onnx"), Options{}) }, "empty"},
		{"garbage file", func() (*Session, error) { return NewSession(filepath.Join(dir, "garbage.onnx"), Options{}) }, "garbage.onnx"},
		{"directory", func() (*Session, error) { return NewSession(dir, Options{}) }, "directory"},
		{"bad device", func() (*Session, error) { return NewSessionFromBytes(good, Options{Device: "tpu"}) }, "cpu, cuda or cuda:N"},
		{"bad opt level", func() (*Session, error) { return NewSessionFromBytes(good, Options{OptLevel: 7}) }, "OptLevel 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.open()
			if err == nil {
				s.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	// Random corruption of a valid model must give errors or sessions, never a panic.
	for i := 0; i < len(good); i++ {
		b := append([]byte(nil), good...)
		b[i] ^= 0xa5
		if s, err := NewSessionFromBytes(b, Options{}); err == nil {
			s.Close()
		}
	}
}

func TestCUDAUnavailableIsAnError(t *testing.T) {
	testLib(t)
	if fileExists(filepath.Join(filepath.Dir(LoadedLibrary()), "libonnxruntime_providers_cuda.so")) {
		t.Skip("the CUDA provider is installed here; this test covers machines without it")
	}
	m := newTiny().in("a", Float32, 1).out("y", Float32, 1).node("Neg", "neg", []string{"a"}, []string{"y"}).bytes(t)
	_, err := NewSessionFromBytes(m, Options{Device: "cuda:0"})
	if err == nil {
		t.Fatal("a CUDA session started without the CUDA provider library")
	}
	for _, want := range []string{"CUDA", "libonnxruntime_providers_cuda.so", "make ort-gpu"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	t.Logf("CUDA error as users see it:\n%v", err)
}

func TestPlacementCPU(t *testing.T) {
	testLib(t)
	path := filepath.Join(t.TempDir(), "m.onnx")
	m := newTiny().in("a", Float32, 2).out("y", Float32, 2).
		node("Add", "add0", []string{"a", "a"}, []string{"t"}).node("Neg", "", []string{"t"}, []string{"y"}).bytes(t)
	os.WriteFile(path, m, 0o644)
	got, err := Placement(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"add0": "CPUExecutionProvider", "Neg#0": "CPUExecutionProvider"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Placement = %v, want %v", got, want)
	}
	// stderr works again afterwards (it was redirected while the session was created).
	if _, err := os.Stderr.WriteString(""); err != nil {
		t.Fatal(err)
	}
}

func TestParsePlacementMixed(t *testing.T) {
	// The format of ONNX Runtime 1.29's session_state.cc when providers share the graph.
	log := `2026-11-27 21:11:19.066 [I:onnxruntime:, transformer_memcpy.cc:393 AddCopyNode] Add MemcpyToHost before x
2026-11-27 21:11:19.066 [V:onnxruntime:, session_state.cc:1378 VerifyEachNodeIsAssignedToAnEp] Node placements
2026-11-27 21:11:19.066 [V:onnxruntime:, session_state.cc:1385 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 3
2026-11-27 21:11:19.066 [V:onnxruntime:, session_state.cc:1387 VerifyEachNodeIsAssignedToAnEp]   MatMulNBits (node_linear_1)
2026-11-27 21:11:19.066 [V:onnxruntime:, session_state.cc:1387 VerifyEachNodeIsAssignedToAnEp]   Softmax (sm)
2026-11-27 21:11:19.066 [V:onnxruntime:, session_state.cc:1387 VerifyEachNodeIsAssignedToAnEp]   MemcpyToHost (Memcpy)
2026-11-27 21:11:19.066 [V:onnxruntime:, session_state.cc:1385 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CPUExecutionProvider]. Number of nodes: 2
2026-11-27 21:11:19.066 [V:onnxruntime:, session_state.cc:1387 VerifyEachNodeIsAssignedToAnEp]   Shape (node_shape_0)
2026-11-27 21:11:19.066 [V:onnxruntime:, session_state.cc:1387 VerifyEachNodeIsAssignedToAnEp]   Gather ()
2026-11-27 21:11:19.066 [W:onnxruntime:, session_state.cc:1390 VerifyEachNodeIsAssignedToAnEp] Some nodes` +
		` were not assigned to the preferred execution providers which may or may not have an negative impact on performance.
`
	got, err := parsePlacement([]byte(log), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []NodePlacement{
		{"node_linear_1", "MatMulNBits", "CUDAExecutionProvider"},
		{"sm", "Softmax", "CUDAExecutionProvider"},
		{"Memcpy", "MemcpyToHost", "CUDAExecutionProvider"},
		{"node_shape_0", "Shape", "CPUExecutionProvider"},
		{"Gather#0", "Gather", "CPUExecutionProvider"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsePlacement =\n%v\nwant\n%v", got, want)
	}
	if _, err := parsePlacement([]byte("nothing here\n"), nil); err == nil {
		t.Error("a log without placement lines parsed")
	}
}

// TestInitNotALibrary loads a file that is not a shared library in a child process (the
// parent's environment is already initialised, and Init is process-wide).
func TestInitNotALibrary(t *testing.T) {
	if os.Getenv("ORTRUN_CHILD_BADLIB") != "" {
		err := Init(os.Getenv("ORTRUN_CHILD_BADLIB"))
		if err == nil || !strings.Contains(err.Error(), "loading ONNX Runtime from") {
			t.Fatalf("Init(not a library) = %v", err)
		}
		return
	}
	fake := filepath.Join(t.TempDir(), LibName)
	os.WriteFile(fake, []byte("not an ELF file"), 0o644)
	cmd := exec.Command(os.Args[0], "-test.run=^TestInitNotALibrary$", "-test.v")
	cmd.Env = append(os.Environ(), "ORTRUN_CHILD_BADLIB="+fake)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestInitBadPaths(t *testing.T) {
	dir := t.TempDir()
	err := Init(filepath.Join(dir, "missing", LibName))
	if err == nil || !strings.Contains(err.Error(), "make ort") {
		t.Errorf("Init(missing) = %v", err)
	}
	if err := Init(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("Init(dir) = %v", err)
	}
}

// TestCUDA runs on a machine with the CUDA provider, CUDA 13 and a GPU (the GPU machine after
// `. ../shared/device/ort-gpu-env.sh`); elsewhere it skips, unless ORTQ_REQUIRE_CUDA=1.
func TestCUDA(t *testing.T) {
	testLib(t)
	if d := cudaDiagnosis(); d != "" || !fileExists(filepath.Join(filepath.Dir(LoadedLibrary()), "libonnxruntime_providers_cuda.so")) {
		if os.Getenv("ORTQ_REQUIRE_CUDA") == "1" {
			t.Fatalf("ORTQ_REQUIRE_CUDA=1 but CUDA is unavailable:%s", d)
		}
		t.Skipf("CUDA unavailable:%s", d)
	}
	tm := newTiny().in("x", Float32, "n", 3).in("h", Float16, "n", 3).out("y", Float32, "n", 2).out("h2", Float16, "n", 3).
		initF32("w", []int64{3, 2}, []float32{1, 2, 3, 4, 5, 6}).
		node("MatMul", "mm", []string{"x", "w"}, []string{"y"}).
		node("Add", "add16", []string{"h", "h"}, []string{"h2"})
	path := filepath.Join(t.TempDir(), "m.onnx")
	os.WriteFile(path, tm.bytes(t), 0o644)
	s, err := NewSession(path, Options{Device: "cuda:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res := mustRun(t, s, map[string]*Tensor{
		"x": f32([]int64{1, 3}, 1, 0, -1),
		"h": {DType: Float16, Shape: []int64{1, 3}, Data: []uint16{0x3c00, 0xc000, 0x3800}},
	})
	if !reflect.DeepEqual(res["y"].Data, []float32{-4, -4}) {
		t.Errorf("y = %v", res["y"].Data)
	}
	if !reflect.DeepEqual(res["h2"].Data, []uint16{0x4000, 0xc400, 0x3c00}) {
		t.Errorf("h2 = %#04x", res["h2"].Data)
	}
	ps, err := Placements(path, Options{Device: "cuda"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("placement on cuda: %v", ps)
	for _, p := range ps {
		if (p.Name == "mm" || p.Name == "add16") && p.Provider != "CUDAExecutionProvider" {
			t.Errorf("%s on %s", p.Name, p.Provider)
		}
	}
	if _, err := NewSession(path, Options{Device: "cuda:57"}); err == nil {
		t.Error("cuda:57 opened")
	} else {
		t.Logf("cuda:57: %v", err)
	}
}
