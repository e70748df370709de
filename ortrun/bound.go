package ortrun

import (
	"fmt"
	"slices"
	"strconv"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Buffer is a tensor in a session's device memory: GPU memory for a CUDA session, host
// memory otherwise, allocated by the session's own allocator. Go code never touches its
// bytes; a Copier moves data between it and the host. Close every Buffer before its session.
type Buffer struct {
	t     *ort.AllocatedTensor
	DType DType
	Shape []int64
}

// NewBuffer allocates an uninitialized tensor in the session's device memory.
func (s *Session) NewBuffer(dt DType, shape []int64) (*Buffer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return nil, fmt.Errorf("new buffer: session is closed")
	}
	if s.alloc == nil {
		mi, _, err := s.memoryInfo()
		if err != nil {
			return nil, fmt.Errorf("new buffer: %w", err)
		}
		defer mi.Destroy()
		if s.alloc, err = s.sess.CreateAllocator(mi); err != nil {
			return nil, fmt.Errorf("new buffer: the session's allocator: %w", err)
		}
	}
	var t *ort.AllocatedTensor
	err := s.onDevice(false, func() (err error) {
		t, err = ort.NewAllocatedTensor(s.alloc, ort.NewShape(shape...), ort.TensorElementDataType(dt))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("new %s buffer %v: %w", dt, shape, err)
	}
	return &Buffer{t: t, DType: dt, Shape: append([]int64(nil), shape...)}, nil
}

// View returns a buffer of another element type and shape over b's memory, e.g. 4-bit
// weights as uint8 for MatMulNBits and as UINT4 for DequantizeLinear. The view owns nothing:
// it must not be used after b is closed, and closing it leaves b's memory alone. The shape
// must fit in b's bytes.
func (b *Buffer) View(dt DType, shape []int64) (*Buffer, error) {
	return b.ViewAt(0, dt, shape)
}

// ViewAt is View from byte offset of b's memory on.
func (b *Buffer) ViewAt(offset int64, dt DType, shape []int64) (*Buffer, error) {
	if b == nil || b.t == nil {
		return nil, fmt.Errorf("view of a closed buffer")
	}
	if offset < 0 {
		return nil, fmt.Errorf("view at byte %d of a buffer", offset)
	}
	v, err := b.t.NewViewAt(uintptr(offset), ort.TensorElementDataType(dt), ort.NewShape(shape...))
	if err != nil {
		return nil, fmt.Errorf("%s view %v at byte %d of a %s buffer %v: %w", dt, shape, offset, b.DType, b.Shape, err)
	}
	return &Buffer{t: v, DType: dt, Shape: append([]int64(nil), shape...)}, nil
}

// Close frees the buffer's memory.
func (b *Buffer) Close() {
	if b != nil && b.t != nil {
		b.t.Destroy()
		b.t = nil
	}
}

// Binding fixes the buffers one kind of run reads and writes, so that repeated runs move no
// data between host and device. With a CUDA graph (Options.CUDAGraph) every run of a binding
// replays the graph captured for its GraphID, so the buffers' addresses must not change:
// a Binding never rebinds.
type Binding struct {
	s    *Session
	b    *ort.IoBinding
	opts *ort.RunOptions
	// warm holds the options of the runs before capture (gpu_graph_id −1) and warmLeft how
	// many remain: see GraphWarmupRuns.
	warm     *ort.RunOptions
	warmLeft int
	// captured: the run that captures the CUDA graph has happened (later runs replay it).
	captured bool
}

// GraphWarmupRuns is how many runs of each Binding go uncaptured before its CUDA graph is
// captured. A capture records the kernels without running them and fails on anything a
// stream may not do while capturing: a cudaMalloc when the memory arena grows, the creation
// of a cuBLAS workspace, a pinned host buffer. Plain runs first leave all of that allocated,
// so the capture only reuses it (measured on an H200: capturing the first run fails with
// "operation failed due to a previous error during capture").
const GraphWarmupRuns = 2

// Bind binds every graph input and output to a buffer. graphID selects the CUDA graph the
// runs capture and replay (ONNX Runtime's gpu_graph_id: ≥ 1 for one graph per binding, −1 for
// none); it is ignored without Options.CUDAGraph.
func (s *Session) Bind(inputs, outputs map[string]*Buffer, graphID int) (*Binding, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.sess == nil {
		return nil, fmt.Errorf("bind: session is closed")
	}
	if err := s.checkBound(inputs, outputs); err != nil {
		return nil, err
	}
	ib, err := s.sess.CreateIoBinding()
	if err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	bd := &Binding{s: s, b: ib}
	fail := func(err error) (*Binding, error) {
		bd.Close()
		return nil, fmt.Errorf("bind: %w", err)
	}
	for _, v := range s.inputs {
		if err := ib.BindInput(v.name, inputs[v.name].t); err != nil {
			return fail(fmt.Errorf("input %q: %w", v.name, err))
		}
	}
	for _, v := range s.outputs {
		if err := ib.BindOutput(v.name, outputs[v.name].t); err != nil {
			return fail(fmt.Errorf("output %q: %w", v.name, err))
		}
	}
	if s.cudaGraph {
		if bd.opts, err = ort.NewRunOptions(); err != nil {
			return fail(err)
		}
		if err := bd.opts.AddConfigEntry("gpu_graph_id", strconv.Itoa(graphID)); err != nil {
			return fail(err)
		}
		if bd.warm, err = ort.NewRunOptions(); err != nil {
			return fail(err)
		}
		if err := bd.warm.AddConfigEntry("gpu_graph_id", "-1"); err != nil {
			return fail(err)
		}
		bd.warmLeft = GraphWarmupRuns
	}
	return bd, nil
}

// checkBound requires a live buffer for every graph input and output and no other names.
func (s *Session) checkBound(inputs, outputs map[string]*Buffer) error {
	for _, side := range []struct {
		what  string
		vis   []valueInfo
		index map[string]int
		bufs  map[string]*Buffer
	}{{"input", s.inputs, s.inIndex, inputs}, {"output", s.outputs, s.outIndex, outputs}} {
		for _, v := range side.vis {
			if b := side.bufs[v.name]; b == nil || b.t == nil {
				return fmt.Errorf("bind: graph %s %q has no buffer", side.what, v.name)
			}
		}
		for name := range side.bufs {
			if _, ok := side.index[name]; !ok {
				return fmt.Errorf("bind: the graph has no %s %q", side.what, name)
			}
		}
	}
	return nil
}

// Run runs the session on the bound buffers and returns when the outputs are written.
func (b *Binding) Run() error {
	b.s.mu.RLock()
	defer b.s.mu.RUnlock()
	if b.s.sess == nil {
		return fmt.Errorf("run: session is closed")
	}
	opts := b.opts
	if b.warmLeft > 0 {
		opts = b.warm
		b.warmLeft--
	}
	capture := b.s.cudaGraph && opts == b.opts && !b.captured
	err := b.s.onDevice(capture, func() error {
		if err := b.s.sess.RunWithBindingAndOptions(b.b, opts); err != nil {
			return err
		}
		return b.b.SynchronizeBoundOutputs()
	})
	if err == nil && capture {
		b.captured = true
	}
	return err
}

// Captures reports whether the binding's runs are captured in a CUDA graph (after
// GraphWarmupRuns plain runs, the next run captures and later runs replay).
func (b *Binding) Captures() bool { return b.s.cudaGraph }

// Close releases the binding (not the buffers).
func (b *Binding) Close() {
	for _, o := range []**ort.RunOptions{&b.opts, &b.warm} {
		if *o != nil {
			(*o).Destroy()
			*o = nil
		}
	}
	if b.b != nil {
		b.b.Destroy()
		b.b = nil
	}
}

// Copier moves tensors between Go memory and the Buffers of one device. On CUDA it first
// tries ONNX Runtime's CopyTensors with the CUDA provider registered as an execution provider
// library (directcopy.go; Tuning.NoDirectCopy turns that off). ONNX Runtime 1.29 offers no
// copy outside a run otherwise, so elsewhere, or when that fails, the Copier runs Identity
// graphs: a host tensor bound as the input of a device session is copied to the device by
// the run and the Identity writes it into the bound buffer; the other way, a host tensor bound
// as the output receives the device's result. UploadAll and DownloadAll move several tensors
// in one run; each distinct list of element types and ranks gets one session (each a CUDA
// execution provider of its own), made on first use.
type Copier struct {
	opts     Options
	mu       sync.Mutex
	sessions map[string]*Session
	// directState and note: whether copies go through CopyTensors on CUDA (directcopy.go).
	directState int
	note        string
}

// NewCopier returns a Copier for the device of opts (only Device matters).
func NewCopier(opts Options) *Copier {
	return &Copier{opts: Options{Device: opts.Device, IntraOpThreads: 1}, sessions: map[string]*Session{}}
}

// Close releases the Copier's sessions.
func (c *Copier) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, s := range c.sessions {
		s.Close()
		delete(c.sessions, k)
	}
}

// Sessions is the number of copy sessions the Copier holds (each, on a GPU, an execution
// provider with memory of its own).
func (c *Copier) Sessions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

// session returns the copy session for tensors of these types and ranks.
func (c *Copier) session(bufs []*Buffer) (*Session, error) {
	key := ""
	for _, b := range bufs {
		key += fmt.Sprintf("%d/%d,", b.DType, len(b.Shape))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.sessions[key]; s != nil {
		return s, nil
	}
	model, err := identityModel(bufs)
	if err != nil {
		return nil, err
	}
	s, err := NewSessionFromBytes(model, c.opts)
	if err != nil {
		return nil, fmt.Errorf("copy session for %s: %w", key, err)
	}
	c.sessions[key] = s
	return s, nil
}

// Upload copies src into dst (same element type and shape).
func (c *Copier) Upload(dst *Buffer, src *Tensor) error {
	return c.UploadAll([]*Buffer{dst}, []*Tensor{src})
}

// UploadAll copies srcs[i] into dsts[i] (same element types and shapes), in one run.
func (c *Copier) UploadAll(dsts []*Buffer, srcs []*Tensor) error {
	if len(dsts) != len(srcs) || len(dsts) == 0 {
		return fmt.Errorf("upload: %d buffers for %d tensors", len(dsts), len(srcs))
	}
	ins := make([]ort.Value, len(srcs))
	outs := make([]ort.Value, len(dsts))
	defer destroyAll(ins)
	for i, src := range srcs {
		dst := dsts[i]
		if err := src.Validate(); err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		if src.DType != dst.DType || !slices.Equal(src.Shape, dst.Shape) {
			return fmt.Errorf("upload: a %s %v tensor into a %s %v buffer", src.DType, src.Shape, dst.DType, dst.Shape)
		}
		v, err := toValue(src)
		if err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		ins[i], outs[i] = v, dst.t
	}
	if c.direct() {
		if ok, err := c.uploadDirect(dsts, srcs, ins, outs); ok || err != nil {
			return err
		}
	}
	return c.run(dsts, ins, outs)
}

// Download copies src into a new Go tensor.
func (c *Copier) Download(src *Buffer) (*Tensor, error) {
	ts, err := c.DownloadAll([]*Buffer{src})
	if err != nil {
		return nil, err
	}
	return ts[0], nil
}

// DownloadAll copies each buffer into a new Go tensor, in one run.
func (c *Copier) DownloadAll(srcs []*Buffer) ([]*Tensor, error) {
	if c.direct() {
		ts, err := c.downloadDirect(srcs)
		if err == nil {
			return ts, nil
		}
		c.fallBack(err)
	}
	return download(srcs, func(ins, outs []ort.Value) error { return c.run(srcs, ins, outs) })
}

// download copies the buffers into new host tensors with transfer(buffers' values, host values).
func download(srcs []*Buffer, transfer func(ins, outs []ort.Value) error) ([]*Tensor, error) {
	ins := make([]ort.Value, len(srcs))
	outs := make([]ort.Value, len(srcs))
	defer destroyAll(outs)
	for i, src := range srcs {
		v, err := toValue(&Tensor{DType: src.DType, Shape: append([]int64(nil), src.Shape...), Data: makeData(src.DType, src.Shape)})
		if err != nil {
			return nil, fmt.Errorf("download: %w", err)
		}
		ins[i], outs[i] = src.t, v
	}
	if err := transfer(ins, outs); err != nil {
		return nil, err
	}
	return valuesToTensors(outs)
}

// valuesToTensors converts host values into Go tensors.
func valuesToTensors(vs []ort.Value) ([]*Tensor, error) {
	got := make([]*Tensor, len(vs))
	for i, v := range vs {
		t, err := fromValue(v)
		if err != nil {
			return nil, fmt.Errorf("download: %w", err)
		}
		got[i] = t
	}
	return got, nil
}

func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v != nil {
			v.Destroy()
		}
	}
}

// run copies ins[i] to outs[i] with the session for bufs' types and ranks.
func (c *Copier) run(bufs []*Buffer, ins, outs []ort.Value) error {
	s, err := c.session(bufs)
	if err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	// All of it on the device's thread: binding a host tensor to a device input already
	// copies it (ONNX Runtime copies inputs across devices at bind time).
	return s.onDevice(false, func() error {
		ib, err := s.sess.CreateIoBinding()
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		defer ib.Destroy()
		for i := range ins {
			if err := ib.BindInput("x"+strconv.Itoa(i), ins[i]); err != nil {
				return fmt.Errorf("copy: %w", err)
			}
			if err := ib.BindOutput("y"+strconv.Itoa(i), outs[i]); err != nil {
				return fmt.Errorf("copy: %w", err)
			}
		}
		if err := s.sess.RunWithBinding(ib); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		return ib.SynchronizeBoundOutputs()
	})
}

// identityModel is y_i = Identity(x_i) for the element types and ranks of bufs (symbolic
// dimensions).
func identityModel(bufs []*Buffer) ([]byte, error) {
	g := &onnxpb.GraphProto{Name: "ortq_copy"}
	for i, b := range bufs {
		dims := make([]*onnxpb.TensorShapeProto_Dimension, len(b.Shape))
		for j := range dims {
			dims[j] = &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: fmt.Sprintf("d%d_%d", i, j)}}
		}
		vi := func(name string) *onnxpb.ValueInfoProto {
			return &onnxpb.ValueInfoProto{Name: name, Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
				TensorType: &onnxpb.TypeProto_Tensor{ElemType: int32(b.DType), Shape: &onnxpb.TensorShapeProto{Dim: dims}}}}}
		}
		x, y := "x"+strconv.Itoa(i), "y"+strconv.Itoa(i)
		g.Node = append(g.Node, &onnxpb.NodeProto{OpType: "Identity", Input: []string{x}, Output: []string{y}, Name: "copy" + strconv.Itoa(i)})
		g.Input = append(g.Input, vi(x))
		g.Output = append(g.Output, vi(y))
	}
	m := &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}}, Graph: g}
	return proto.Marshal(m)
}
