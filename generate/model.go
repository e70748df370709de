package generate

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"google.golang.org/protobuf/proto"
)

// Model is an exported decoder opened for generation.
type Model struct {
	Dir     string
	Config  *export.GenAIConfig
	sess    *ortrun.Session
	dt      ortrun.DType // the cache's element type (the graph's float type)
	layers  int
	kvHeads int64
	headDim int64
	vocab   int
	extra   map[string]*ortrun.Tensor // LoRA inputs of an onnx-adapter export
	tmp     string                    // temporary copy of such a graph, removed by Close
	// resident: the cache stays in the session's device memory (resident.go).
	resident bool
	copier   *ortrun.Copier
	extraBuf map[string]*ortrun.Buffer
	// shared: an export.KVShared model, decoded by batch.go with picker, its argmax
	// session; captured: its decode step runs in a CUDA graph.
	shared   bool
	picker   *ortrun.Session
	captured bool
	run      *batchRun // the last batch's buffers, reused by the next of the same size
	graphs   int       // CUDA graph ids handed out
	// fused: the export's decode-graph fusions (model metadata export.MetaFused).
	fused string
	// blockers: the decoder's ops whose CUDA kernels a CUDA graph cannot replay
	// (passes.CaptureBlockers; MatMulBnb4 of an NF4/FP4 export): it decodes uncaptured.
	blockers []string
	// Notes say how the model runs (CUDA graph or why not), for standard error.
	Notes []string
}

// Open reads dir/genai_config.json and opens its decoder with opts; on CUDA the KV cache
// stays in device memory between steps (OpenWith).
func Open(dir string, opts ortrun.Options) (*Model, error) {
	return OpenWith(dir, opts, strings.HasPrefix(strings.ToLower(opts.Device), "cuda"))
}

// OpenWith is Open with the choice of a device-resident cache (resident.go) or one that
// goes through Go memory every step (the better choice on the CPU, where both are host
// memory and the resident path only adds binding work).
func OpenWith(dir string, opts ortrun.Options, resident bool) (*Model, error) {
	cfg, err := export.ReadGenAIConfig(filepath.Join(dir, export.GenAIConfigFile))
	if err != nil {
		return nil, err
	}
	d := cfg.Model.Decoder
	path := filepath.Join(dir, d.Filename)
	m := &Model{Dir: dir, Config: cfg, layers: d.Layers, kvHeads: int64(d.KVHeads), headDim: int64(d.HeadSize), vocab: cfg.Model.VocabSize}
	g, err := m.readInputs(path)
	if err != nil {
		return nil, err
	}
	if len(m.extra) > 0 {
		// ortrun feeds only inputs without a default (an input that is also an
		// initializer keeps its initializer), so the session opens a copy of the graph
		// whose LoRA inputs have none, beside a link to the same weights file.
		if path, err = m.withoutDefaults(g, dir); err != nil {
			m.removeTemp()
			return nil, err
		}
	}
	m.shared = cfg.Search.PastPresentShareBuff
	m.blockers = passes.CaptureBlockers(ortgraph.NewGraph(g))
	for _, kv := range g.P.MetadataProps {
		if kv.Key == export.MetaFused {
			m.fused = kv.Value
		}
	}
	if err := m.openSession(path, opts); err != nil {
		m.removeTemp()
		return nil, err
	}
	if m.shared {
		resident = true
		if m.picker, err = openPicker(opts, m.vocab); err != nil {
			m.Close()
			return nil, err
		}
	}
	if resident {
		m.resident, m.copier, m.extraBuf = true, ortrun.NewCopier(opts), map[string]*ortrun.Buffer{}
		if err := m.uploadExtra(); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// NoteGraphOff opens the note that says a requested CUDA graph could not be used.
const NoteGraphOff = "CUDA graph off"

// openSession opens the decoder. Only a shared-layout model on CUDA keeps opts.CUDAGraph
// (the concat layout's shapes change every step); where the decoder holds an op a captured
// graph cannot replay (m.blockers) or ONNX Runtime refuses the capture (a node outside the
// CUDA provider, such as GroupQueryAttention in a float32 graph), the model opens without it
// and says so in Notes.
func (m *Model) openSession(path string, opts ortrun.Options) error {
	opts.CUDAGraph = opts.CUDAGraph && m.shared && strings.HasPrefix(strings.ToLower(opts.Device), "cuda")
	if opts.CUDAGraph && len(m.blockers) > 0 {
		m.Notes = append(m.Notes, fmt.Sprintf("%s: the decoder holds %s, whose CUDA kernels a captured graph cannot replay safely; decoding uncaptured",
			NoteGraphOff, strings.Join(m.blockers, ", ")))
		opts.CUDAGraph = false
	}
	var err error
	m.sess, err = ortrun.NewSession(path, opts)
	if err != nil && opts.CUDAGraph {
		m.Notes = append(m.Notes, fmt.Sprintf("%s: ONNX Runtime refused to capture the decode step (%v); decoding uncaptured", NoteGraphOff, err))
		opts.CUDAGraph = false
		m.sess, err = ortrun.NewSession(path, opts)
	}
	if err != nil {
		return err
	}
	m.captured = opts.CUDAGraph
	fused := ""
	if m.fused != "" {
		fused = "; fused: " + m.fused
	}
	switch {
	case m.captured:
		m.Notes = append(m.Notes, "decode step captured in a CUDA graph (shared KV cache, argmax on the device"+fused+")")
	case m.shared:
		m.Notes = append(m.Notes, "decode step uncaptured (shared KV cache, argmax on the device"+fused+")")
	}
	return nil
}

// withoutDefaults writes g without the initializers of its LoRA inputs and returns the
// copy's path: in a temporary directory beside a hard link to the export's weights file
// (ONNX Runtime refuses external data reached through a symbolic link), or, where the link
// cannot be made (another filesystem), as a hidden file in the export directory itself.
func (m *Model) withoutDefaults(g *ortgraph.Model, dir string) (string, error) {
	keep := g.P.Graph.Initializer[:0]
	for _, t := range g.P.Graph.Initializer {
		if m.extra[t.Name] == nil {
			keep = append(keep, t)
		}
	}
	g.P.Graph.Initializer = keep
	b, err := proto.Marshal(g.P)
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "ortq-generate-")
	if err != nil {
		return "", err
	}
	if err := os.Link(filepath.Join(dir, export.DataFile), filepath.Join(tmp, export.DataFile)); err == nil {
		m.tmp = tmp
		p := filepath.Join(tmp, export.ModelFile)
		return p, os.WriteFile(p, b, 0o644)
	}
	os.RemoveAll(tmp)
	f, err := os.CreateTemp(dir, ".ortq-generate-*.onnx")
	if err != nil {
		return "", fmt.Errorf("%s: a LoRA-input export needs a temporary copy of its graph: %w", dir, err)
	}
	m.tmp = f.Name()
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "", err
	}
	return f.Name(), f.Close()
}

func (m *Model) removeTemp() {
	if m.tmp != "" {
		os.RemoveAll(m.tmp)
	}
}

// readInputs reads the graph's inputs (the protobuf part only; the weights stay on disk):
// the cache's element type from past_key_values.0.key, and the inputs beyond the decoder's
// own — the LoRA tensors of an `--format onnx-adapter` export — which are fed zeros (the
// graph's defaults: the base model) until UseAdapter.
func (m *Model) readInputs(path string) (*ortgraph.Model, error) {
	g, err := ortgraph.Load(path)
	if err != nil {
		return nil, err
	}
	own := map[string]bool{export.InputIDs: true, export.AttentionMask: true, export.PositionIDs: true}
	for i := 0; i < m.layers; i++ {
		own[export.PastKey(i)], own[export.PastValue(i)] = true, true
	}
	m.extra = map[string]*ortrun.Tensor{}
	for _, in := range g.P.Graph.Input {
		tt := in.GetType().GetTensorType()
		dt := ortrun.DType(tt.GetElemType())
		if in.Name == export.PastKey(0) {
			m.dt = dt
		}
		if own[in.Name] {
			continue
		}
		var dims []int64
		for _, d := range tt.GetShape().GetDim() {
			if d.GetDimParam() != "" || d.GetDimValue() <= 0 {
				return nil, fmt.Errorf("%s: input %q has a dynamic shape: not a model written by `ortq export`", path, in.Name)
			}
			dims = append(dims, d.GetDimValue())
		}
		if m.extra[in.Name], err = zeros(dt, dims); err != nil {
			return nil, fmt.Errorf("%s: input %q: %w", path, in.Name, err)
		}
	}
	if m.dt != ortrun.Float32 && m.dt != ortrun.Float16 {
		return nil, fmt.Errorf("%s: no float32 or float16 input %s: not a model written by `ortq export`", path, export.PastKey(0))
	}
	return g, nil
}

// zeros is a tensor of zeros of a float type.
func zeros(dt ortrun.DType, dims []int64) (*ortrun.Tensor, error) {
	n := ortgraph.NumElements(dims)
	switch dt {
	case ortrun.Float32:
		return &ortrun.Tensor{DType: dt, Shape: dims, Data: make([]float32, n)}, nil
	case ortrun.Float16:
		return &ortrun.Tensor{DType: dt, Shape: dims, Data: make([]uint16, n)}, nil
	}
	return nil, fmt.Errorf("element type %s: want float32 or float16", dt)
}

// UseAdapter feeds the parameters of an .onnx_adapter file (`ortq export --format
// onnx-adapter`) as the model's LoRA inputs; each must name one, with its shape and type.
func (m *Model) UseAdapter(path string) error {
	ps, err := export.ReadAdapterFile(path)
	if err != nil {
		return err
	}
	for _, p := range ps {
		cur := m.extra[p.Name]
		if cur == nil {
			return fmt.Errorf("%s: parameter %q is not an input of %s: use the adapter made for this export", path, p.Name, m.Dir)
		}
		if ortrun.DType(p.DType) != cur.DType || !slices.Equal(p.Dims, cur.Shape) {
			return fmt.Errorf("%s: parameter %q is %v of type %d, the model wants %v of %s", path, p.Name, p.Dims, p.DType, cur.Shape, cur.DType)
		}
		t, _ := zeros(cur.DType, cur.Shape)
		switch d := t.Data.(type) {
		case []float32:
			for i := range d {
				d[i] = math.Float32frombits(binary.LittleEndian.Uint32(p.Raw[4*i:]))
			}
		case []uint16:
			for i := range d {
				d[i] = binary.LittleEndian.Uint16(p.Raw[2*i:])
			}
		}
		m.extra[p.Name] = t
	}
	if m.resident {
		return m.uploadExtra()
	}
	return nil
}

// AdapterInputs is the number of inputs beyond the decoder's own (LoRA tensors).
func (m *Model) AdapterInputs() int { return len(m.extra) }

// Close releases the session (and the temporary copy of an onnx-adapter graph).
func (m *Model) Close() error {
	defer m.removeTemp()
	if m.run != nil {
		m.run.close()
	}
	if m.copier != nil {
		closeAll(m.extraBuf)
		m.copier.Close()
	}
	if m.picker != nil {
		m.picker.Close()
	}
	if m.sess == nil {
		return nil
	}
	return m.sess.Close()
}

// State is one sequence's KV cache and position. Close it when done (a resident cache
// holds device memory).
type State struct {
	past map[string]*ortrun.Tensor
	bufs map[string]*ortrun.Buffer // resident cache (allocated by the first Forward)
	pos  int
	// pad is the number of masked slots at the cache's start (see NewState).
	pad int
}

// Close frees a resident cache.
func (st *State) Close() {
	closeAll(st.bufs)
	st.bufs = nil
}

// NewState returns an empty cache. A float16 cache starts with one masked slot instead of
// none: onnxruntime_go cannot pass an empty float16 tensor, and a key whose attention_mask is
// 0 gets exactly zero weight in the exported graph, so the slot changes nothing.
func (m *Model) NewState() *State {
	st := &State{past: map[string]*ortrun.Tensor{}}
	if m.dt == ortrun.Float16 {
		st.pad = 1
	}
	shape := []int64{1, m.kvHeads, int64(st.pad), m.headDim}
	n := int(m.kvHeads*m.headDim) * st.pad
	for i := 0; i < m.layers; i++ {
		for _, name := range []string{export.PastKey(i), export.PastValue(i)} {
			if m.dt == ortrun.Float16 {
				st.past[name] = &ortrun.Tensor{DType: m.dt, Shape: shape, Data: make([]uint16, n)}
			} else {
				st.past[name] = &ortrun.Tensor{DType: m.dt, Shape: shape, Data: make([]float32, n)}
			}
		}
	}
	return st
}

// Len is the number of positions in the cache.
func (st *State) Len() int { return st.pos }

// Forward runs ids (one sequence) after the cached positions, appends them to the cache and
// returns their logits [len(ids), vocab] as float32.
func (m *Model) Forward(st *State, ids []int64) ([]float32, error) {
	n, total := int64(len(ids)), st.pos+len(ids)
	if n == 0 {
		return nil, fmt.Errorf("generate: no tokens to run")
	}
	if m.shared {
		return nil, fmt.Errorf("generate: %s is a shared-KV-cache export (--kv-cache %s): use Generate or GenerateBatch", m.Dir, export.KVShared)
	}
	if m.resident && st.bufs == nil {
		if err := m.residentPast(st); err != nil {
			return nil, err
		}
	}
	mask := make([]int64, st.pad+total)
	pos := make([]int64, n)
	for i := st.pad; i < len(mask); i++ {
		mask[i] = 1
	}
	for i := range pos {
		pos[i] = int64(st.pos + i)
	}
	in := map[string]*ortrun.Tensor{
		export.InputIDs:      {DType: ortrun.Int64, Shape: []int64{1, n}, Data: ids},
		export.AttentionMask: {DType: ortrun.Int64, Shape: []int64{1, int64(len(mask))}, Data: mask},
		export.PositionIDs:   {DType: ortrun.Int64, Shape: []int64{1, n}, Data: pos},
	}
	if m.resident {
		logits, err := m.forwardResident(st, in, n, int64(len(mask)))
		if err == nil {
			st.pos = total
		}
		return logits, err
	}
	for k, v := range st.past {
		in[k] = v
	}
	for k, v := range m.extra {
		in[k] = v
	}
	out, err := m.sess.Run(in, nil)
	if err != nil {
		return nil, err
	}
	for i := 0; i < m.layers; i++ {
		st.past[export.PastKey(i)] = out[export.PresentKey(i)]
		st.past[export.PastValue(i)] = out[export.PresentValue(i)]
	}
	st.pos = total
	return floats(out[export.Logits]), nil
}

// floats returns a float32 or float16 tensor's values as float32.
func floats(t *ortrun.Tensor) []float32 {
	switch d := t.Data.(type) {
	case []float32:
		return d
	case []uint16:
		f := make([]float32, len(d))
		for i, h := range d {
			f[i] = ortrun.Float16ToFloat32(h)
		}
		return f
	}
	return nil
}

// KVCache is the export's cache layout (export.KVShared or export.KVConcat).
func (m *Model) KVCache() string {
	if m.shared {
		return export.KVShared
	}
	return export.KVConcat
}

// Fused lists the decode graph's fusions as the export recorded them (export.MetaFused:
// e.g. "lora,qkv,skip_norm", "none" for a shared export written with --fuse=false), ""
// for a concat export or one written before fusing existed.
func (m *Model) Fused() string { return m.fused }

// Captured reports whether the decode step runs in a CUDA graph.
func (m *Model) Captured() bool { return m.captured }
