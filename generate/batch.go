package generate

import (
	"fmt"
	"slices"
	"time"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/ortrun"
)

// Decoding an export in the shared layout (export.KVShared): the cache is one buffer per
// layer and side of [rows, kv_heads, maxLen, head_dim], allocated once in the session's
// memory and bound as both past_key_values.* and present.*, so GroupQueryAttention writes
// each step's keys and values in place. The decode step's inputs (ids [rows, 1], the
// attention mask [rows, maxLen]) and outputs (logits, the cache) are fixed buffers bound
// once, so on CUDA the step is captured in a CUDA graph and replayed per token
// (ortrun.Binding). Greedy decoding takes the argmax on the device with a one-node session
// whose output is the step's ids buffer: a step moves the mask in and rows ids out. The
// same code runs on the CPU (host buffers, no capture), which is how it is tested.

// batchRun is one batch generation's buffers and bindings.
type batchRun struct {
	m          *Model
	rows, tlen int // rows and the cache length
	cache      map[string]*ortrun.Buffer
	ids, mask  *ortrun.Buffer // the decode step's inputs
	logits     *ortrun.Buffer // [rows, 1, vocab]
	step, pick *ortrun.Binding
	bufs       []*ortrun.Buffer
	binds      []*ortrun.Binding
	graphID    int
}

func (r *batchRun) close() {
	for _, b := range r.binds {
		b.Close()
	}
	for _, b := range r.bufs {
		b.Close()
	}
}

// buffer allocates a buffer the run owns.
func (r *batchRun) buffer(s *ortrun.Session, dt ortrun.DType, shape ...int64) (*ortrun.Buffer, error) {
	b, err := s.NewBuffer(dt, shape)
	if err == nil {
		r.bufs = append(r.bufs, b)
	}
	return b, err
}

// bind binds a session's buffers; graphID ≥ 1 captures its runs in a CUDA graph.
func (r *batchRun) bind(s *ortrun.Session, in, out map[string]*ortrun.Buffer, graphID int) (*ortrun.Binding, error) {
	b, err := s.Bind(in, out, graphID)
	if err == nil {
		r.binds = append(r.binds, b)
	}
	return b, err
}

// batchRun returns the buffers and bindings for rows and a cache of tlen positions: the
// last ones when they have that size (a CUDA graph captured on them replays at once; the
// cache needs no clearing, as GroupQueryAttention reads no position past a row's length),
// else new ones, bound under a graph id of their own, since a captured graph replays on the
// addresses it was captured with.
func (m *Model) batchRun(rows, tlen int) (*batchRun, error) {
	if r := m.run; r != nil && r.rows == rows && r.tlen == tlen {
		return r, nil
	}
	if m.run != nil {
		m.run.close()
		m.run = nil
	}
	m.graphs++
	r, err := m.newBatchRun(rows, tlen, m.graphs)
	if err != nil {
		return nil, err
	}
	m.run = r
	return r, nil
}

// newBatchRun allocates the zeroed cache and the decode step's buffers and binds them.
func (m *Model) newBatchRun(rows, tlen, graphID int) (*batchRun, error) {
	r := &batchRun{m: m, rows: rows, tlen: tlen, cache: map[string]*ortrun.Buffer{}, graphID: graphID}
	shape := []int64{int64(rows), m.kvHeads, int64(tlen), m.headDim}
	z, err := zeros(m.dt, shape)
	if err != nil {
		return nil, err
	}
	for i := 0; i < m.layers; i++ {
		for _, name := range []string{export.PastKey(i), export.PastValue(i)} {
			b, err := r.buffer(m.sess, m.dt, shape...)
			if err != nil {
				r.close()
				return nil, err
			}
			if err := m.copier.Upload(b, z); err != nil {
				r.close()
				return nil, err
			}
			r.cache[name] = b
		}
	}
	if err := r.bindStep(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// bindStep binds the decode step (under r.graphID) and the argmax after it.
func (r *batchRun) bindStep() error {
	m := r.m
	var err error
	if r.ids, err = r.buffer(m.sess, ortrun.Int64, int64(r.rows), 1); err != nil {
		return err
	}
	if r.mask, err = r.buffer(m.sess, ortrun.Int64, int64(r.rows), int64(r.tlen)); err != nil {
		return err
	}
	if r.logits, err = r.buffer(m.sess, ortrun.Float32, int64(r.rows), 1, int64(m.vocab)); err != nil {
		return err
	}
	if r.step, err = r.bind(m.sess, r.inputs(r.ids, r.mask), r.outputs(r.logits), r.graphID); err != nil {
		return err
	}
	r.pick, err = r.bind(m.picker, map[string]*ortrun.Buffer{pickIn: r.logits}, map[string]*ortrun.Buffer{pickOut: r.ids}, -1)
	return err
}

// inputs and outputs are the graph's bindings for ids, mask and logits buffers: the cache
// is both past and present.
func (r *batchRun) inputs(ids, mask *ortrun.Buffer) map[string]*ortrun.Buffer {
	in := map[string]*ortrun.Buffer{export.InputIDs: ids, export.AttentionMask: mask}
	for k, b := range r.cache {
		in[k] = b
	}
	for k, b := range r.m.extraBuf {
		in[k] = b
	}
	return in
}

func (r *batchRun) outputs(logits *ortrun.Buffer) map[string]*ortrun.Buffer {
	out := map[string]*ortrun.Buffer{export.Logits: logits}
	for i := 0; i < r.m.layers; i++ {
		out[export.PresentKey(i)] = r.cache[export.PastKey(i)]
		out[export.PresentValue(i)] = r.cache[export.PastValue(i)]
	}
	return out
}

// prefill runs the right-padded prompts in one run through the same graph and cache and
// returns each row's next token.
func (r *batchRun) prefill(prompts [][]int64, s *Sampler) ([]int64, error) {
	m, rows := r.m, int64(r.rows)
	n := 0
	for _, p := range prompts {
		n = max(n, len(p))
	}
	seq := int64(n)
	ids, mask := make([]int64, r.rows*n), make([]int64, r.rows*n)
	for b, p := range prompts {
		copy(ids[b*n:], p)
		for i := range p {
			mask[b*n+i] = 1
		}
	}
	var tmp batchRun
	defer tmp.close()
	ib, err := tmp.buffer(m.sess, ortrun.Int64, rows, seq)
	if err != nil {
		return nil, err
	}
	mb, err := tmp.buffer(m.sess, ortrun.Int64, rows, seq)
	if err != nil {
		return nil, err
	}
	lb, err := tmp.buffer(m.sess, ortrun.Float32, rows, seq, int64(m.vocab))
	if err != nil {
		return nil, err
	}
	err = m.copier.UploadAll([]*ortrun.Buffer{ib, mb}, []*ortrun.Tensor{
		{DType: ortrun.Int64, Shape: []int64{rows, seq}, Data: ids}, {DType: ortrun.Int64, Shape: []int64{rows, seq}, Data: mask}})
	if err != nil {
		return nil, err
	}
	bd, err := tmp.bind(m.sess, r.inputs(ib, mb), r.outputs(lb), -1)
	if err != nil {
		return nil, err
	}
	if err := bd.Run(); err != nil {
		return nil, fmt.Errorf("generate: prefill: %w", err)
	}
	last := func(b int) int { return b*n + len(prompts[b]) - 1 }
	if s.Temperature != 0 {
		lt, err := m.copier.Download(lb)
		if err != nil {
			return nil, err
		}
		return r.sampleRows(floats(lt), last, s), nil
	}
	pb, err := tmp.buffer(m.sess, ortrun.Int64, rows, seq)
	if err != nil {
		return nil, err
	}
	return r.argmaxRows(&tmp, lb, pb, last)
}

// argmaxRows takes the argmax of logits [rows, seq, vocab] on the device into pb
// [rows, seq] and returns position at(b) of each row.
func (r *batchRun) argmaxRows(tmp *batchRun, lb, pb *ortrun.Buffer, at func(b int) int) ([]int64, error) {
	bd, err := tmp.bind(r.m.picker, map[string]*ortrun.Buffer{pickIn: lb}, map[string]*ortrun.Buffer{pickOut: pb}, -1)
	if err != nil {
		return nil, err
	}
	if err := bd.Run(); err != nil {
		return nil, fmt.Errorf("generate: argmax: %w", err)
	}
	t, err := r.m.copier.Download(pb)
	if err != nil {
		return nil, err
	}
	all := t.Data.([]int64)
	next := make([]int64, r.rows)
	for b := range next {
		next[b] = all[at(b)]
	}
	return next, nil
}

// sampleRows draws each row's token from its logits at position at(b) (rows of vocab).
func (r *batchRun) sampleRows(logits []float32, at func(b int) int, s *Sampler) []int64 {
	v := r.m.vocab
	next := make([]int64, r.rows)
	for b := range next {
		i := at(b)
		next[b] = int64(s.Next(logits[i*v : (i+1)*v]))
	}
	return next
}

// decode runs one step: row b's token next[b] at position pos[b] (the ids buffer already
// holds next when greedy decoding wrote it there), and returns each row's following token.
func (r *batchRun) decode(next []int64, pos []int, upload bool, s *Sampler) ([]int64, error) {
	m, rows := r.m, int64(r.rows)
	mask := make([]int64, r.rows*r.tlen)
	for b, p := range pos {
		for i := 0; i <= p; i++ {
			mask[b*r.tlen+i] = 1
		}
	}
	dsts := []*ortrun.Buffer{r.mask}
	srcs := []*ortrun.Tensor{{DType: ortrun.Int64, Shape: []int64{rows, int64(r.tlen)}, Data: mask}}
	if upload {
		dsts = append(dsts, r.ids)
		srcs = append(srcs, &ortrun.Tensor{DType: ortrun.Int64, Shape: []int64{rows, 1}, Data: next})
	}
	if err := m.copier.UploadAll(dsts, srcs); err != nil {
		return nil, err
	}
	if err := r.step.Run(); err != nil {
		if m.captured {
			return nil, fmt.Errorf("generate: decode step in a CUDA graph (--cuda-graph=false runs it uncaptured): %w", err)
		}
		return nil, fmt.Errorf("generate: decode step: %w", err)
	}
	if s.Temperature != 0 {
		lt, err := m.copier.Download(r.logits)
		if err != nil {
			return nil, err
		}
		return r.sampleRows(floats(lt), func(b int) int { return b }, s), nil
	}
	if err := r.pick.Run(); err != nil {
		return nil, fmt.Errorf("generate: argmax: %w", err)
	}
	t, err := m.copier.Download(r.ids)
	if err != nil {
		return nil, err
	}
	return slices.Clone(t.Data.([]int64)), nil
}

// timed runs f and adds its wall time to *d.
func timed(d *time.Duration, f func() error) error {
	t0 := time.Now()
	err := f()
	*d += time.Since(t0)
	return err
}

// generateShared is GenerateBatch on a shared-layout export: the cache holds the longest
// prompt plus o.MaxNewTokens positions; the prompts are prefilled right-padded in one run,
// then every step decodes one token of every row until each has stopped (EOS) or has
// o.MaxNewTokens. A row that stopped keeps running with the others; its tokens are dropped.
func (m *Model) generateShared(prompts [][]int64, o Options) ([][]int64, Stats, error) {
	st := Stats{Rows: len(prompts)}
	longest := 0
	for _, p := range prompts {
		st.PromptTokens += len(p)
		longest = max(longest, len(p))
	}
	outs := make([][]int64, len(prompts))
	r, err := m.batchRun(len(prompts), longest+o.MaxNewTokens)
	if err != nil {
		return outs, st, err
	}
	var next []int64
	if err := timed(&st.Prefill, func() (err error) { next, err = r.prefill(prompts, o.Sampler); return err }); err != nil {
		return outs, st, err
	}
	eos := map[int64]bool{}
	for _, e := range o.EOS {
		eos[int64(e)] = true
	}
	done := make([]bool, len(prompts))
	pos := make([]int, len(prompts))
	for b, p := range prompts {
		pos[b] = len(p)
	}
	for step := 0; ; step++ {
		live, err := r.take(next, outs, done, eos, o)
		if err != nil || live == 0 || step == o.MaxNewTokens-1 {
			st.NewTokens, st.StoppedAtEOS = countTokens(outs), live == 0 && err == nil
			return outs, st, err
		}
		var d time.Duration
		err = timed(&d, func() (err error) {
			next, err = r.decode(next, pos, step == 0 || o.Sampler.Temperature != 0, o.Sampler)
			return err
		})
		st.Decode += d
		st.Steps = append(st.Steps, d)
		if err != nil {
			st.NewTokens = countTokens(outs)
			return outs, st, err
		}
		for b := range pos {
			pos[b]++
		}
	}
}

// take appends each live row's token, streams it (EOS is kept but not streamed) and returns
// the rows still live.
func (r *batchRun) take(next []int64, outs [][]int64, done []bool, eos map[int64]bool, o Options) (int, error) {
	live := 0
	for b, id := range next {
		if done[b] {
			continue
		}
		outs[b] = append(outs[b], id)
		if eos[id] {
			done[b] = true
			continue
		}
		live++
		if o.OnRowToken != nil {
			if err := o.OnRowToken(b, int(id)); err != nil {
				return live, err
			}
		}
	}
	return live, nil
}

func countTokens(outs [][]int64) int {
	n := 0
	for _, o := range outs {
		n += len(o)
	}
	return n
}
