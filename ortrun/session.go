package ortrun

import (
	"fmt"
	"github.com/ortq/ortq/kernels"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/ortq/ortq/internal/devname"
	ort "github.com/yalue/onnxruntime_go"
)

// Options configure a Session.
type Options struct {
	// Device is "cpu" (or ""), "cuda" (device 0) or "cuda:N".
	Device string
	// IntraOpThreads is the CPU thread pool size; 0 lets ONNX Runtime choose (one per core).
	IntraOpThreads int
	// DisableOptimizations turns every graph optimization off (overrides OptLevel).
	DisableOptimizations bool
	// OptLevel: 0 = ONNX Runtime's default (all), 1 = basic, 2 = extended, 3 = all.
	OptLevel int
	// ProfilePrefix, when set, enables ONNX Runtime's profiler; it writes
	// <prefix>_<date>.json (Chrome trace format) when the session is closed.
	ProfilePrefix string
	// LogVerbose sets this session's ONNX Runtime log severity to verbose (to stderr).
	LogVerbose bool
	// BatchTokens is the number of tokens one run processes (micro-batch × sequence), a
	// hint for memory planning; 0 when unknown. See MemPatternTokens.
	BatchTokens int
	// CUDAGraph asks the CUDA provider to capture each Binding's run in a CUDA graph and
	// replay it (enable_cuda_graph): one launch instead of one per kernel. ONNX Runtime
	// refuses it at session creation unless every compute node runs on CUDA and the graph has
	// no control flow; only Binding runs may be used, on buffers that never move.
	CUDAGraph bool
	// Initializers supplies graph initializers by name (OrtApi::AddInitializer): the session
	// reads these buffers instead of loading the graph's tensors of the same names, so two
	// sessions, or two initializers of different element types, can share one copy (see
	// Buffer.View). ONNX Runtime uses a buffer as it is when it lies on the device the session
	// places the initializer on, and copies it otherwise. The buffers must outlive the session.
	Initializers map[string]*Buffer
	// Tuning holds experiment settings (ortq sets them from its ORTQX_* knobs,
	// internal/envconfig); the zero value is ortq's default.
	Tuning Tuning
}

// Tuning holds the settings ortq exposes only for experiments, not as flags.
type Tuning struct {
	// SessionConfig adds ONNX Runtime session config entries (AddSessionConfigEntry).
	SessionConfig map[string]string
	// CUDAOptions overrides CUDA execution provider options (e.g. gpu_mem_limit).
	CUDAOptions map[string]string
	// MemPattern, when set, keeps (true) or drops (false) memory patterns instead of the
	// choice by device and BatchTokens (see MemPatternTokens).
	MemPattern *bool
	// ArenaMaxDeadBytes, when set, is the CUDA arena's max_dead_bytes_per_chunk.
	ArenaMaxDeadBytes *int
	// NoDirectCopy makes a Copier on CUDA copy through Identity sessions instead of
	// CopyTensors (directcopy.go).
	NoDirectCopy bool
}

// MemPatternTokens is the largest BatchTokens for which CUDA sessions keep ONNX Runtime's
// memory patterns. With patterns, ONNX Runtime lays out a run's intermediate tensors by a
// plan recorded on an earlier run of the same shapes: that saves allocation work per node,
// which pays when a step is bound by dispatch (small batches), but the plan reserved far more
// than a large step's live tensors need. Measured on an H200, Llama-3.2-3B shape, seq 512:
// micro-batch 7, peak 12.36 GiB with patterns and 8.32 GiB without at the same step time;
// micro-batch 1, 140.5 ms per step with patterns and 156.7 ms without (5.00 / 4.23 GiB).
const MemPatternTokens = 1024

// ParseDevice splits "cpu", "cuda" or "cuda:N" into the provider and the CUDA device id
// (devname.Parse).
func ParseDevice(device string) (provider string, id int, err error) { return devname.Parse(device) }

// optimizationLevel is ONNX Runtime's graph optimization level for OptLevel and
// DisableOptimizations.
func (o Options) optimizationLevel() (ort.GraphOptimizationLevel, error) {
	switch {
	case o.DisableOptimizations:
		return ort.GraphOptimizationLevelDisableAll, nil
	case o.OptLevel == 0 || o.OptLevel == 3:
		return ort.GraphOptimizationLevelEnableAll, nil
	case o.OptLevel == 1:
		return ort.GraphOptimizationLevelEnableBasic, nil
	case o.OptLevel == 2:
		return ort.GraphOptimizationLevelEnableExtended, nil
	}
	return 0, fmt.Errorf("OptLevel %d: want 0 (default), 1 (basic), 2 (extended) or 3 (all)", o.OptLevel)
}

func (o Options) sessionOptions() (*ort.SessionOptions, error) {
	provider, devID, err := ParseDevice(o.Device)
	if err != nil {
		return nil, err
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("creating ONNX Runtime session options: %w", err)
	}
	fail := func(what string, err error) (*ort.SessionOptions, error) {
		so.Destroy()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := kernels.Register(so); err != nil {
		return fail("ortq's custom ops", err)
	}
	if o.IntraOpThreads < 0 {
		return fail("options", fmt.Errorf("IntraOpThreads %d is negative", o.IntraOpThreads))
	}
	if o.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(o.IntraOpThreads); err != nil {
			return fail("setting intra-op threads", err)
		}
	}
	level, err := o.optimizationLevel()
	if err != nil {
		return fail("options", err)
	}
	if err := so.SetGraphOptimizationLevel(level); err != nil {
		return fail("setting the graph optimization level", err)
	}
	if o.ProfilePrefix != "" {
		if err := so.EnableProfiling(o.ProfilePrefix); err != nil {
			return fail("enabling profiling", err)
		}
	}
	for k, v := range o.Tuning.SessionConfig {
		if err := so.AddSessionConfigEntry(k, v); err != nil {
			return fail("session config entry "+k, err)
		}
	}
	// Memory patterns: kept on the CPU and for small CUDA runs (see MemPatternTokens);
	// Tuning.MemPattern overrides.
	memPattern := provider != "cuda" || o.BatchTokens > 0 && o.BatchTokens <= MemPatternTokens
	if o.Tuning.MemPattern != nil {
		memPattern = *o.Tuning.MemPattern
	}
	if !memPattern {
		if err := so.SetMemPattern(false); err != nil {
			return fail("turning memory patterns off", err)
		}
	}
	if o.LogVerbose {
		if err := so.SetLogSeverityLevel(ort.LoggingLevelVerbose); err != nil {
			return fail("setting the log level", err)
		}
	}
	for name, buf := range o.Initializers {
		if buf == nil || buf.t == nil {
			return fail("initializer "+name, fmt.Errorf("the buffer is closed"))
		}
		if err := so.AddInitializer(name, buf.t); err != nil {
			return fail("initializer "+name, err)
		}
	}
	if provider == "cuda" {
		if err := appendCUDA(so, devID, o.CUDAGraph, o.Tuning); err != nil {
			so.Destroy()
			return nil, err
		}
	}
	return so, nil
}

// Session runs one ONNX model. Run is safe for concurrent use.
type Session struct {
	mu       sync.RWMutex // Run holds it shared, Close exclusively
	sess     *ort.DynamicAdvancedSession
	inputs   []valueInfo
	outputs  []valueInfo
	inIndex  map[string]int
	outIndex map[string]int
	device   string
	deviceID int // the CUDA device number when device is "cuda"
	// cudaGraph: the session was created with Options.CUDAGraph on CUDA.
	cudaGraph bool
	// alloc is the session's device allocator, made by the first NewBuffer.
	alloc *ort.Allocator
}

// NewSession loads an .onnx file (external data files are found relative to it).
func NewSession(modelPath string, opts Options) (*Session, error) {
	b, unmap, err := mapFile(modelPath)
	if err != nil {
		return nil, fmt.Errorf("reading model %q: %w", modelPath, err)
	}
	ins, outs, err := graphIO(b)
	unmap()
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", modelPath, err)
	}
	return newSession(modelPath, ins, outs, opts, func(in, out []string, so *ort.SessionOptions) (*ort.DynamicAdvancedSession, error) {
		return ort.NewDynamicAdvancedSession(modelPath, in, out, so)
	})
}

// NewSessionFromBytes loads a serialized ModelProto (its external data, if any, is looked up
// relative to the working directory).
func NewSessionFromBytes(model []byte, opts Options) (*Session, error) {
	if len(model) == 0 {
		return nil, fmt.Errorf("model bytes are empty, not an ONNX model")
	}
	ins, outs, err := graphIO(model)
	if err != nil {
		return nil, fmt.Errorf("model bytes: %w", err)
	}
	return newSession("model bytes", ins, outs, opts, func(in, out []string, so *ort.SessionOptions) (*ort.DynamicAdvancedSession, error) {
		return ort.NewDynamicAdvancedSessionWithONNXData(model, in, out, so)
	})
}

func newSession(what string, ins, outs []valueInfo, opts Options,
	create func(in, out []string, so *ort.SessionOptions) (*ort.DynamicAdvancedSession, error)) (*Session, error) {
	if !ort.IsInitialized() {
		return nil, fmt.Errorf("ONNX Runtime is not initialised: call ortrun.Init first")
	}
	if len(outs) == 0 {
		return nil, fmt.Errorf("%s: the graph has no outputs", what)
	}
	s := &Session{inputs: ins, outputs: outs, inIndex: map[string]int{}, outIndex: map[string]int{}}
	for i, v := range ins {
		s.inIndex[v.name] = i
	}
	for i, v := range outs {
		s.outIndex[v.name] = i
		// Every Run computes every output, so an output Run could never return makes the
		// session useless: refuse it now rather than on the first Run.
		if v.dtype != Undefined && !v.dtype.supported() {
			return nil, fmt.Errorf("%s: output %q has element type %s; ortrun returns only float32, float64, float16, int64, int32, uint8 and bool", what, v.name,
				v.dtype)
		}
		if v.rankKnown() && len(v.dims) == 0 && v.dtype == Float16 {
			return nil, fmt.Errorf("%s: output %q is a float16 scalar, which onnxruntime_go cannot return; give it shape [1] (Reshape/Unsqueeze) in the graph",
				what, v.name)
		}
	}
	so, err := opts.sessionOptions()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer so.Destroy()
	s.device, s.deviceID, _ = ParseDevice(opts.Device)
	s.cudaGraph = opts.CUDAGraph && s.device == "cuda"
	// Created on the device's thread too: the CUDA provider may set up per-thread state
	// while the session initialises (see onDevice).
	err = s.onDevice(false, func() (err error) {
		s.sess, err = create(names(ins), names(outs), so)
		return err
	})
	if err != nil {
		if s.device == "cuda" {
			return nil, fmt.Errorf("%s: creating a CUDA session: %w%s", what, err, cudaDiagnosis())
		}
		return nil, fmt.Errorf("%s: ONNX Runtime could not load it: %w", what, err)
	}
	return s, nil
}

func names(vs []valueInfo) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.name
	}
	return out
}

// InputNames are the graph inputs Run requires, in graph order (initializers excluded).
func (s *Session) InputNames() []string { return names(s.inputs) }

// OutputNames are the graph outputs, in graph order.
func (s *Session) OutputNames() []string { return names(s.outputs) }

// Close releases the session. With profiling on, this is when ONNX Runtime writes the profile.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return nil
	}
	if s.alloc != nil {
		s.alloc.Destroy()
		s.alloc = nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	return err
}

// Run feeds every graph input by name and returns the requested outputs (all of them when
// outputs is empty), copied into Go memory.
//
// onnxruntime_go fixes a session's output names when it is created, so every Run computes all
// graph outputs and returns the ones asked for; build graphs whose outputs you want.
// Float16 outputs and 0-d outputs are preallocated here, because onnxruntime_go v1.27.0 cannot
// return them itself (it copies one byte per float16 element, and it cannot wrap a 0-d value);
// a float16 output's shape must therefore be static or use dim_params that name input axes.
func (s *Session) Run(inputs map[string]*Tensor, outputs []string) (map[string]*Tensor, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.sess == nil {
		return nil, fmt.Errorf("run: session is closed")
	}
	if err := s.checkNames(inputs, outputs); err != nil {
		return nil, err
	}
	if len(outputs) == 0 {
		outputs = s.OutputNames()
	}
	var values []ort.Value // every value made here or by the run, freed on return
	defer func() {
		for _, v := range values {
			if !isNilValue(v) {
				v.Destroy()
			}
		}
	}()
	ins, params, err := s.inputValues(inputs, &values)
	if err != nil {
		return nil, err
	}
	outs, pre, err := s.preallocate(params, &values)
	if err != nil {
		return nil, err
	}
	err = s.onDevice(false, func() error { return s.sess.Run(ins, outs) })
	failed := -1 // the output onnxruntime_go allocated but could not convert
	for i, v := range outs {
		if pre[i] != nil {
			continue
		}
		if isNilValue(v) {
			// onnxruntime_go converts the outputs it allocates in order and stops at the
			// first it cannot convert, leaving a nil (or a nil *CustomDataTensor, for an
			// element type it has no Go type for) there and nil after it.
			outs[i] = nil
			if err != nil && failed < 0 {
				failed = i
			}
			continue
		}
		values = append(values, v) // allocated by the run: free it on return
	}
	if err != nil {
		return nil, s.runError(err, failed)
	}
	return s.results(outputs, outs, pre)
}

// inputValues checks each input against the graph's declaration and wraps it as an ORT
// value (added to values), in the session's input order; params maps each dim_param of
// the inputs to its size in this run.
func (s *Session) inputValues(inputs map[string]*Tensor, values *[]ort.Value) (ins []ort.Value, params map[string]int64, err error) {
	params = map[string]int64{}
	ins = make([]ort.Value, len(s.inputs))
	for i, vi := range s.inputs {
		t := inputs[vi.name]
		if err := t.Validate(); err != nil {
			return nil, nil, fmt.Errorf("run: input %q: %w", vi.name, err)
		}
		if vi.dtype != Undefined && t.DType != vi.dtype {
			return nil, nil, fmt.Errorf("run: input %q: the model wants %s, got %s", vi.name, vi.dtype, t.DType)
		}
		if vi.rankKnown() {
			if len(t.Shape) != len(vi.dims) {
				return nil, nil, fmt.Errorf("run: input %q: the model wants rank %d (%s), got shape %v", vi.name, len(vi.dims), dimString(vi), t.Shape)
			}
			for a, p := range vi.params {
				if p != "" {
					params[p] = t.Shape[a]
				}
			}
		}
		v, err := toValue(t)
		if err != nil {
			return nil, nil, fmt.Errorf("run: input %q: %w", vi.name, err)
		}
		ins[i] = v
		*values = append(*values, v)
	}
	return ins, params, nil
}

// preallocate makes the outputs onnxruntime_go cannot allocate itself (float16 and 0-d)
// with their shapes resolved from params (added to values); outs holds them at their
// output index, pre their Go side, and both are nil for the others.
func (s *Session) preallocate(params map[string]int64, values *[]ort.Value) (outs []ort.Value, pre []*Tensor, err error) {
	outs = make([]ort.Value, len(s.outputs))
	pre = make([]*Tensor, len(s.outputs))
	for i, vi := range s.outputs {
		if vi.dtype != Float16 && !(vi.rankKnown() && len(vi.dims) == 0) {
			continue // onnxruntime_go allocates and copies these correctly
		}
		shape, err := resolveShape(vi, params)
		if err != nil {
			return nil, nil, fmt.Errorf("run: output %q: %w", vi.name, err)
		}
		t := &Tensor{DType: vi.dtype, Shape: shape, Data: makeData(vi.dtype, shape)}
		v, err := toValue(t)
		if err != nil {
			return nil, nil, fmt.Errorf("run: output %q: %w", vi.name, err)
		}
		outs[i], pre[i] = v, t
		*values = append(*values, v)
	}
	return outs, pre, nil
}

// runError explains a failed run: an output onnxruntime_go could not convert (failed ≥ 0)
// or an undeclared 0-d output, else err as it is.
func (s *Session) runError(err error, failed int) error {
	if failed >= 0 && strings.Contains(err.Error(), "creating tensor from ort") {
		vi := s.outputs[failed]
		declared := "its element type is not declared in the graph"
		if vi.dtype != Undefined {
			declared = "the graph declares it " + vi.dtype.String()
		}
		return fmt.Errorf("run: output %q: onnxruntime_go cannot return the tensor ONNX Runtime computed (%s): %w; declare it in the graph as float32, float64, "+
			"float16, int64, int32, uint8 or bool (Cast it if needed)",
			vi.name, declared, err)
	}
	if strings.Contains(err.Error(), "no dimensions") {
		return fmt.Errorf("run: %w (an output is 0-dimensional but the graph does not declare it so; declare its shape as [] or give it shape [1])", err)
	}
	return fmt.Errorf("run: %w", err)
}

// results copies the requested outputs into Go memory.
func (s *Session) results(outputs []string, outs []ort.Value, pre []*Tensor) (map[string]*Tensor, error) {
	result := make(map[string]*Tensor, len(outputs))
	for _, name := range outputs {
		i := s.outIndex[name]
		if pre[i] != nil {
			if sc, ok := outs[i].(scalarValue); ok {
				pre[i].Data = sc.data()
			}
			result[name] = pre[i]
			continue
		}
		t, err := fromValue(outs[i])
		if err != nil {
			return nil, fmt.Errorf("run: output %q: %w", name, err)
		}
		result[name] = t
	}
	return result, nil
}

func (s *Session) checkNames(inputs map[string]*Tensor, outputs []string) error {
	var missing, unknown, unknownOut []string
	for _, vi := range s.inputs {
		if inputs[vi.name] == nil {
			missing = append(missing, vi.name)
		}
	}
	for name := range inputs {
		if _, ok := s.inIndex[name]; !ok {
			unknown = append(unknown, name)
		}
	}
	for _, name := range outputs {
		if _, ok := s.outIndex[name]; !ok {
			unknownOut = append(unknownOut, name)
		}
	}
	if len(missing)+len(unknown)+len(unknownOut) == 0 {
		return nil
	}
	sort.Strings(unknown)
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("missing inputs %q", missing))
	}
	if len(unknown) > 0 {
		parts = append(parts, fmt.Sprintf("inputs %q are not graph inputs", unknown))
	}
	if len(unknownOut) > 0 {
		parts = append(parts, fmt.Sprintf("outputs %q are not graph outputs (it has %q)", unknownOut, s.OutputNames()))
	}
	return fmt.Errorf("run: %s; the graph's inputs are %q", strings.Join(parts, "; "), s.InputNames())
}

func dimString(vi valueInfo) string {
	parts := make([]string, len(vi.dims))
	for i, d := range vi.dims {
		switch {
		case vi.params[i] != "":
			parts[i] = vi.params[i]
		case d >= 0:
			parts[i] = strconv.FormatInt(d, 10)
		default:
			parts[i] = "?"
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func resolveShape(vi valueInfo, params map[string]int64) ([]int64, error) {
	if !vi.rankKnown() {
		return nil,
			fmt.Errorf("%s output has no declared shape; onnxruntime_go v1.27.0 cannot return float16 outputs it allocates itself, so declare the shape in the "+
				"graph (static, or dim_params shared with inputs) or Cast it to float32",
				vi.dtype)
	}
	shape := make([]int64, len(vi.dims))
	for i, d := range vi.dims {
		switch n, ok := params[vi.params[i]]; {
		case d >= 0:
			shape[i] = d
		case vi.params[i] != "" && ok:
			shape[i] = n
		default:
			return nil,
				fmt.Errorf("%s output shape %s: axis %d is not static and names no input axis; onnxruntime_go v1.27.0 cannot return float16 outputs it allocates "+
					"itself, so make the axis static, name it like an input axis, or Cast the output to float32",
					vi.dtype, dimString(vi), i)
		}
	}
	return shape, nil
}

func makeData(dt DType, shape []int64) any {
	n := (&Tensor{Shape: shape}).NumElements()
	switch dt {
	case Float32:
		return make([]float32, n)
	case Float64:
		return make([]float64, n)
	case Float16:
		return make([]uint16, n)
	case Int64:
		return make([]int64, n)
	case Int32:
		return make([]int32, n)
	case Uint8:
		return make([]uint8, n)
	case Bool:
		return make([]bool, n)
	}
	panic(fmt.Sprintf("ortrun: makeData(%v): unsupported dtype reached after validation", dt))
}

// toValue wraps t's Go memory (no copy) as an ONNX Runtime value; the caller keeps t alive and
// Destroys the value.
func toValue(t *Tensor) (ort.Value, error) {
	if len(t.Shape) == 0 {
		return toScalar(t)
	}
	shape := ort.NewShape(t.Shape...)
	switch d := t.Data.(type) {
	case []float32:
		return ort.NewTensor(shape, d)
	case []float64:
		return ort.NewTensor(shape, d)
	case []int64:
		return ort.NewTensor(shape, d)
	case []int32:
		return ort.NewTensor(shape, d)
	case []uint8:
		return ort.NewTensor(shape, d)
	case []bool:
		return ort.NewTensor(shape, d)
	case []uint16:
		// onnxruntime_go's Tensor[uint16] would be UINT16; float16 goes through its
		// custom-data tensor over the same bytes.
		if len(d) == 0 {
			return nil, fmt.Errorf("an empty float16 tensor (shape %v) cannot be passed through onnxruntime_go", t.Shape)
		}
		b := unsafe.Slice((*byte)(unsafe.Pointer(&d[0])), 2*len(d))
		return ort.NewCustomDataTensor(shape, b, ort.TensorElementDataTypeFloat16)
	}
	return nil, fmt.Errorf("unsupported data %T", t.Data)
}

// scalarValue is an onnxruntime_go Scalar[T] of any T, read back after a run.
type scalarValue interface {
	ort.Value
	data() any
}

type scalar[T ort.TensorData] struct{ *ort.Scalar[T] }

func (s scalar[T]) data() any { return []T{s.GetData()} }

func newScalar[T ort.TensorData](v T) (ort.Value, error) {
	sc, err := ort.NewScalar(v)
	if err != nil {
		return nil, err
	}
	return scalar[T]{sc}, nil
}

func toScalar(t *Tensor) (ort.Value, error) {
	switch d := t.Data.(type) {
	case []float32:
		return newScalar(d[0])
	case []float64:
		return newScalar(d[0])
	case []int64:
		return newScalar(d[0])
	case []int32:
		return newScalar(d[0])
	case []uint8:
		return newScalar(d[0])
	case []bool:
		return newScalar(d[0])
	}
	return nil, fmt.Errorf("a 0-d %s tensor cannot be passed through onnxruntime_go; give it shape [1]", t.DType)
}

// fromValue converts an output onnxruntime_go allocated. Its data already lives in Go memory
// (onnxruntime_go copies it there), so the slice is kept, not copied again.
func fromValue(v ort.Value) (*Tensor, error) {
	shape := []int64(v.GetShape())
	switch x := v.(type) {
	case *ort.Tensor[float32]:
		return &Tensor{DType: Float32, Shape: shape, Data: x.GetData()}, nil
	case *ort.Tensor[float64]:
		return &Tensor{DType: Float64, Shape: shape, Data: x.GetData()}, nil
	case *ort.Tensor[int64]:
		return &Tensor{DType: Int64, Shape: shape, Data: x.GetData()}, nil
	case *ort.Tensor[int32]:
		return &Tensor{DType: Int32, Shape: shape, Data: x.GetData()}, nil
	case *ort.Tensor[uint8]:
		return &Tensor{DType: Uint8, Shape: shape, Data: x.GetData()}, nil
	case *ort.Tensor[bool]:
		return &Tensor{DType: Bool, Shape: shape, Data: x.GetData()}, nil
	}
	return nil, fmt.Errorf("ONNX Runtime returned a %T (%v), which ortrun does not convert", v, DType(v.DataType()))
}

// isNilValue reports whether v is nil or holds a nil pointer (onnxruntime_go returns a
// (*CustomDataTensor)(nil) as a Value when it fails to wrap an output; calling Destroy on it
// panics).
func isNilValue(v ort.Value) bool {
	if v == nil {
		return true
	}
	r := reflect.ValueOf(v)
	return r.Kind() == reflect.Pointer && r.IsNil()
}

// fileExists is used by the diagnostics.
func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
