package generate

import (
	"fmt"
	"path/filepath"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortrun"
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
}

// Open reads dir/genai_config.json and opens its decoder with opts.
func Open(dir string, opts ortrun.Options) (*Model, error) {
	cfg, err := export.ReadGenAIConfig(filepath.Join(dir, export.GenAIConfigFile))
	if err != nil {
		return nil, err
	}
	d := cfg.Model.Decoder
	path := filepath.Join(dir, d.Filename)
	dt, err := cacheType(path)
	if err != nil {
		return nil, err
	}
	sess, err := ortrun.NewSession(path, opts)
	if err != nil {
		return nil, err
	}
	return &Model{Dir: dir, Config: cfg, sess: sess, dt: dt, layers: d.Layers, kvHeads: int64(d.KVHeads), headDim: int64(d.HeadSize), vocab: cfg.Model.VocabSize}, nil
}

// cacheType reads the element type of past_key_values.0.key from the graph (the protobuf
// part only; the weights stay on disk).
func cacheType(path string) (ortrun.DType, error) {
	m, err := ortgraph.Load(path)
	if err != nil {
		return 0, err
	}
	for _, in := range m.P.Graph.Input {
		if in.Name == export.PastKey(0) {
			switch dt := ortrun.DType(in.GetType().GetTensorType().GetElemType()); dt {
			case ortrun.Float32, ortrun.Float16:
				return dt, nil
			default:
				return 0, fmt.Errorf("%s: %s is %s: want float32 or float16", path, in.Name, dt)
			}
		}
	}
	return 0, fmt.Errorf("%s: no input %s: not a model written by `ortq export`", path, export.PastKey(0))
}

// Close releases the session.
func (m *Model) Close() error { return m.sess.Close() }

// State is one sequence's KV cache and position.
type State struct {
	past map[string]*ortrun.Tensor
	pos  int
	// pad is the number of masked slots at the cache's start (see NewState).
	pad int
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
	for k, v := range st.past {
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
