package onnxruntime_go

// Tests of device.go (added in the ortq fork). They run on the CPU execution
// provider, where the same calls work as for a device; upstream's
// onnxruntime_test.go is not part of the fork (it needs upstream's 66 MB
// test_data directory).

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// Initializes the environment from $ONNXRUNTIME_SHARED_LIBRARY_PATH, or
// skips the test when it is unset, and destroys it when the test ends.
func initDeviceTestRuntime(t testing.TB) {
	t.Helper()
	p := os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH")
	if p == "" {
		t.Skip("ONNXRUNTIME_SHARED_LIBRARY_PATH is not set")
	}
	if !IsInitialized() {
		SetSharedLibraryPath(p)
		if e := InitializeEnvironment(); e != nil {
			t.Fatalf("Error initializing the onnxruntime environment: %s", e)
		}
	}
	t.Cleanup(func() {
		if e := DestroyEnvironment(); e != nil {
			t.Errorf("Error cleaning up the environment: %s", e)
		}
	})
}

// example_dynamic_axes.onnx sums each [10] row of its [N, 10] input.
func newSumSession(t testing.TB) *DynamicAdvancedSession {
	t.Helper()
	s, e := NewDynamicAdvancedSession("test_data/example_dynamic_axes.onnx",
		[]string{"input_vectors"}, []string{"output_scalars"}, nil)
	if e != nil {
		t.Fatalf("Error creating the session: %s", e)
	}
	t.Cleanup(func() { s.Destroy() })
	return s
}

func TestMemoryInfo(t *testing.T) {
	initDeviceTestRuntime(t)
	cases := []struct {
		name  string
		make  func() (*MemoryInfo, error)
		want  MemoryLocation
		fails bool
	}{
		{"cpu", NewCPUMemoryInfo, MemoryLocation{"Cpu", 0,
			MemoryTypeDefault, AllocatorTypeArena}, false},
		{"cpu device allocator", func() (*MemoryInfo, error) {
			return NewMemoryInfo("Cpu", AllocatorTypeDevice, 0,
				MemoryTypeDefault)
		}, MemoryLocation{"Cpu", 0, MemoryTypeDefault,
			AllocatorTypeDevice}, false},
		// Creating a CUDA memory info needs no GPU: it only describes one.
		{"cuda 1", func() (*MemoryInfo, error) {
			return NewCUDAMemoryInfo(1)
		}, MemoryLocation{"Cuda", 1, MemoryTypeDefault,
			AllocatorTypeDevice}, false},
		{"pinned", func() (*MemoryInfo, error) {
			return NewMemoryInfo("CudaPinned", AllocatorTypeDevice, 0,
				MemoryTypeCPUOutput)
		}, MemoryLocation{"CudaPinned", 0, MemoryTypeCPUOutput,
			AllocatorTypeDevice}, false},
		{"unknown device", func() (*MemoryInfo, error) {
			return NewMemoryInfo("NoSuchDevice", AllocatorTypeDevice, 0,
				MemoryTypeDefault)
		}, MemoryLocation{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, e := c.make()
			if c.fails {
				if e == nil {
					m.Destroy()
					t.Fatalf("Expected an error")
				}
				t.Logf("Got expected error: %s", e)
				return
			}
			if e != nil {
				t.Fatalf("Error creating the memory info: %s", e)
			}
			defer m.Destroy()
			got, e := m.GetLocation()
			if e != nil {
				t.Fatalf("Error reading the memory info: %s", e)
			}
			if got != c.want {
				t.Fatalf("Got %s, want %s", got, c.want)
			}
		})
	}
}

func TestParseAllocatorStats(t *testing.T) {
	cases := []struct {
		name  string
		kv    map[string]string
		want  AllocatorStats
		fails bool
	}{
		{"empty (allocator without statistics)", map[string]string{},
			AllocatorStats{}, false},
		// As recorded from ONNX Runtime 1.29.0's CPU arena after one run of
		// example_dynamic_axes.onnx (TestAllocatorStatsAfterRun logs it).
		{"cpu arena", map[string]string{"InUse": "8", "Limit": "-1",
			"MaxAllocSize": "256", "MaxInUse": "264", "NumAllocs": "2",
			"NumArenaExtensions": "1", "NumArenaShrinkages": "0",
			"NumReserves": "1", "RequestedInUse": "8",
			"TotalAllocated": "1048584"},
			AllocatorStats{Limit: -1, InUse: 8, TotalAllocated: 1048584,
				MaxInUse: 264, NumAllocs: 2, NumReserves: 1,
				NumArenaExtensions: 1, MaxAllocSize: 256,
				Other: map[string]string{"RequestedInUse": "8"}}, false},
		{"negative limit", map[string]string{"Limit": "-1"},
			AllocatorStats{Limit: -1}, false},
		{"not a number", map[string]string{"InUse": "12 bytes"},
			AllocatorStats{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, e := ParseAllocatorStats(c.kv)
			if c.fails {
				if e == nil {
					t.Fatalf("Expected an error, got %+v", got)
				}
				return
			}
			if e != nil {
				t.Fatalf("Error parsing: %s", e)
			}
			if len(got.Other) != len(c.want.Other) {
				t.Fatalf("Got Other %v, want %v", got.Other, c.want.Other)
			}
			for k, v := range c.want.Other {
				if got.Other[k] != v {
					t.Fatalf("Got Other %v, want %v", got.Other, c.want.Other)
				}
			}
			got.Other, c.want.Other = nil, nil
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Got %+v, want %+v", got, c.want)
			}
		})
	}
}

// Runs the sum network on [3, 10] inputs with a plain Run, returning the
// input and the output.
func plainSumRun(t testing.TB, s *DynamicAdvancedSession) ([]float32,
	[]float32) {
	t.Helper()
	input := make([]float32, 30)
	for i := range input {
		input[i] = float32(i%7) - 2.5
	}
	in, e := NewTensor(NewShape(3, 10), input)
	if e != nil {
		t.Fatalf("Error creating the input: %s", e)
	}
	defer in.Destroy()
	outs := []Value{nil}
	if e := s.Run([]Value{in}, outs); e != nil {
		t.Fatalf("Error running the session: %s", e)
	}
	defer outs[0].Destroy()
	return input, append([]float32(nil), outs[0].(*Tensor[float32]).GetData()...)
}

func TestAllocatorStatsAfterRun(t *testing.T) {
	initDeviceTestRuntime(t)
	s := newSumSession(t)
	plainSumRun(t, s)
	info, e := NewCPUMemoryInfo()
	if e != nil {
		t.Fatalf("Error creating the memory info: %s", e)
	}
	defer info.Destroy()
	a, e := s.CreateAllocator(info)
	if e != nil {
		t.Fatalf("Error getting the session's allocator: %s", e)
	}
	defer a.Destroy()
	kv, e := a.GetStats()
	if e != nil {
		t.Fatalf("Error getting statistics: %s", e)
	}
	t.Logf("CPU arena statistics: %v", kv)
	for _, k := range []string{"InUse", "TotalAllocated", "MaxInUse",
		"NumAllocs", "NumReserves", "MaxAllocSize"} {
		if _, ok := kv[k]; !ok {
			t.Errorf("Statistic %s is missing", k)
		}
	}
	stats, e := ParseAllocatorStats(kv)
	if e != nil {
		t.Fatalf("Error parsing statistics: %s", e)
	}
	if stats.MaxInUse <= 0 || stats.NumAllocs <= 0 {
		t.Fatalf("Expected allocations after a run, got %+v", stats)
	}
	if stats.TotalAllocated < stats.MaxInUse {
		t.Fatalf("The arena reserved %d bytes, less than its peak %d",
			stats.TotalAllocated, stats.MaxInUse)
	}
}

func TestIoBindingAllocatedTensors(t *testing.T) {
	initDeviceTestRuntime(t)
	s := newSumSession(t)
	input, want := plainSumRun(t, s)

	info, e := NewCPUMemoryInfo()
	if e != nil {
		t.Fatalf("Error creating the memory info: %s", e)
	}
	defer info.Destroy()
	a, e := s.CreateAllocator(info)
	if e != nil {
		t.Fatalf("Error getting the session's allocator: %s", e)
	}
	defer a.Destroy()

	// The input lives in memory the session's allocator owns (CPU memory
	// here, so the test may write it; device memory would be filled with
	// CopyTensors or by a run).
	in, e := NewAllocatedTensor(a, NewShape(3, 10), TensorElementDataTypeFloat)
	if e != nil {
		t.Fatalf("Error allocating the input: %s", e)
	}
	defer in.Destroy()
	if got := in.GetShape(); !got.Equals(NewShape(3, 10)) {
		t.Fatalf("Allocated shape %s", got)
	}
	p, size, e := in.GetDataPointer()
	if e != nil || size != 30*4 {
		t.Fatalf("GetDataPointer: %d bytes, %v", size, e)
	}
	copy(unsafe.Slice((*float32)(p), 30), input)

	b, e := s.CreateIoBinding()
	if e != nil {
		t.Fatalf("Error creating the binding: %s", e)
	}
	defer b.Destroy()
	if e := b.BindInput("input_vectors", in); e != nil {
		t.Fatalf("Error binding the input: %s", e)
	}
	if e := b.BindOutputToDevice("output_scalars", info); e != nil {
		t.Fatalf("Error binding the output: %s", e)
	}
	if e := b.SynchronizeBoundInputs(); e != nil {
		t.Fatalf("SynchronizeBoundInputs: %s", e)
	}
	opts, e := NewRunOptions()
	if e != nil {
		t.Fatalf("Error creating run options: %s", e)
	}
	defer opts.Destroy()
	if e := opts.AddConfigEntry("gpu_graph_id", "1"); e != nil {
		t.Fatalf("Error adding a run config entry: %s", e)
	}
	for run := 0; run < 2; run++ {
		if e := s.RunWithBindingAndOptions(b, opts); e != nil {
			t.Fatalf("Error running with the binding: %s", e)
		}
	}
	if e := b.SynchronizeBoundOutputs(); e != nil {
		t.Fatalf("SynchronizeBoundOutputs: %s", e)
	}
	names, e := b.GetBoundOutputNames()
	if e != nil || len(names) != 1 || names[0] != "output_scalars" {
		t.Fatalf("Bound output names %q, %v", names, e)
	}

	// Without a copy: the output where ONNX Runtime put it.
	outs, e := b.GetBoundOutputAllocatedTensors()
	if e != nil {
		t.Fatalf("Error getting the bound outputs: %s", e)
	}
	if len(outs) != 1 || !outs[0].GetShape().Equals(NewShape(3)) ||
		outs[0].ElementType() != TensorElementDataTypeFloat {
		t.Fatalf("Bound outputs %+v", outs)
	}
	loc, e := GetValueLocation(outs[0])
	if e != nil || loc.Name != MemoryInfoNameCPU {
		t.Fatalf("Output location %s, %v", loc, e)
	}
	op, size, e := outs[0].GetDataPointer()
	if e != nil || size != 3*4 {
		t.Fatalf("GetDataPointer of the output: %d bytes, %v", size, e)
	}
	got := append([]float32(nil),
		unsafe.Slice((*float32)(op), 3)...)
	outs[0].Destroy()
	// With upstream's copy into Go memory.
	values, e := b.GetBoundOutputValues()
	if e != nil {
		t.Fatalf("Error getting the bound output values: %s", e)
	}
	defer values[0].Destroy()
	for name, data := range map[string][]float32{
		"allocated tensor":     got,
		"GetBoundOutputValues": values[0].(*Tensor[float32]).GetData(),
	} {
		for i := range want {
			if data[i] != want[i] {
				t.Fatalf("%s: output %d is %g, plain Run gave %g", name, i,
					data[i], want[i])
			}
		}
	}
}

// ONNX Runtime 1.29's environment has no CPU-to-CPU data transfer (newer
// releases add one): CopyTensors copies only between devices whose execution
// provider library is registered with the environment.
const noDataTransfer = "Data transfer implementation between source and " +
	"destination device was not found"

func TestCopyTensors(t *testing.T) {
	initDeviceTestRuntime(t)
	a, _ := NewTensor(NewShape(2), []float32{1, 2})
	defer a.Destroy()
	b, _ := NewTensor(NewShape(2), []float32{0, 0})
	defer b.Destroy()
	c, _ := NewTensor(NewShape(3), []float32{1, 2, 3})
	defer c.Destroy()
	e := CopyTensors([]Value{a}, []Value{b})
	if e != nil && strings.Contains(e.Error(), noDataTransfer) {
		t.Logf("This ONNX Runtime (%s) cannot copy CPU to CPU: %s",
			GetVersion(), e)
	} else if e != nil {
		t.Fatalf("CopyTensors: %s", e)
	} else if d := b.GetData(); d[0] != 1 || d[1] != 2 {
		t.Fatalf("CopyTensors gave %v", d)
	}
	cases := []struct {
		name     string
		src, dst []Value
	}{
		{"count mismatch", []Value{a}, []Value{}},
		{"nil value", []Value{a}, []Value{nil}},
		{"size mismatch", []Value{a}, []Value{c}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if e := CopyTensors(c.src, c.dst); e == nil {
				t.Fatalf("Expected an error")
			} else {
				t.Logf("Got expected error: %s", e)
			}
		})
	}
}

// NewView reinterprets an allocated tensor's bytes: same address, the new
// element type and shape, refused when the shape needs more bytes.
func TestNewView(t *testing.T) {
	initDeviceTestRuntime(t)
	s := newSumSession(t)
	info, e := NewCPUMemoryInfo()
	if e != nil {
		t.Fatalf("Error creating the memory info: %s", e)
	}
	defer info.Destroy()
	a, e := s.CreateAllocator(info)
	if e != nil {
		t.Fatalf("Error getting the session's allocator: %s", e)
	}
	defer a.Destroy()
	base, e := NewAllocatedTensor(a, NewShape(4, 10), TensorElementDataTypeFloat)
	if e != nil {
		t.Fatalf("Error allocating: %s", e)
	}
	defer base.Destroy()
	v, e := base.NewView(TensorElementDataTypeUint8, NewShape(160))
	if e != nil {
		t.Fatalf("NewView: %s", e)
	}
	defer v.Destroy()
	pb, _, _ := base.GetDataPointer()
	pv, size, e := v.GetDataPointer()
	if e != nil || pv != pb || size != 160 || v.ElementType() != TensorElementDataTypeUint8 {
		t.Fatalf("view at %p (%d bytes, %s), base at %p: %v", pv, size, v.ElementType(), pb, e)
	}
	if _, e := base.NewView(TensorElementDataTypeUint8, NewShape(161)); e == nil {
		t.Errorf("a 161-byte view of 160 bytes was accepted")
	}
	at, e := base.NewViewAt(40, TensorElementDataTypeUint4, NewShape(2, 120))
	if e != nil {
		t.Fatalf("NewViewAt: %s", e)
	}
	defer at.Destroy()
	if pa, size, _ := at.GetDataPointer(); uintptr(pa) != uintptr(pb)+40 || size != 120 {
		t.Errorf("view at byte 40: %p (%d bytes), base %p", pa, size, pb)
	}
	if _, e := base.NewViewAt(40, TensorElementDataTypeUint8, NewShape(121)); e == nil {
		t.Errorf("a 121-byte view of the last 120 bytes was accepted")
	}
}
