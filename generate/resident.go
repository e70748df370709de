package generate

import (
	"fmt"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/ortrun"
)

// The resident path keeps the KV cache in the session's device memory (ortrun Buffers):
// each step binds the previous step's present buffers as the past inputs and fresh buffers
// for the new presents, so only the step's ids, mask and positions go to the device and
// only the logits come back. On CUDA this replaces two copies of the whole cache per token
// (28 layers × 2 × 8 heads × 128 × 2 bytes per position for the Llama-3.2-3B shape: 44 MB
// at 384 positions) by a few kilobytes. Its cache starts with one masked slot, like a
// float16 host cache, because a run binds no zero-sized buffers.

// residentPast allocates the initial cache: one zeroed, masked slot per layer.
func (m *Model) residentPast(st *State) error {
	st.pad = 1
	st.bufs = map[string]*ortrun.Buffer{}
	for i := 0; i < m.layers; i++ {
		for _, name := range []string{export.PastKey(i), export.PastValue(i)} {
			z, err := zeros(m.dt, []int64{1, m.kvHeads, 1, m.headDim})
			if err != nil {
				return err
			}
			b, err := m.upload(z)
			if err != nil {
				st.Close()
				return err
			}
			st.bufs[name] = b
		}
	}
	return nil
}

// upload copies a host tensor into a new buffer of the session's device.
func (m *Model) upload(t *ortrun.Tensor) (*ortrun.Buffer, error) {
	b, err := m.sess.NewBuffer(t.DType, t.Shape)
	if err != nil {
		return nil, err
	}
	if err := m.copier.Upload(b, t); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// uploadExtra puts the LoRA inputs (zeros, or an adapter's values) on the device, into
// the buffers already there when there are (bindings, and a CUDA graph captured on them,
// keep reading the same addresses).
func (m *Model) uploadExtra() error {
	for name, t := range m.extra {
		if b := m.extraBuf[name]; b != nil {
			if err := m.copier.Upload(b, t); err != nil {
				return err
			}
			continue
		}
		b, err := m.upload(t)
		if err != nil {
			return err
		}
		m.extraBuf[name] = b
	}
	return nil
}

// forwardResident is Forward on device buffers: in holds the step's host inputs (ids,
// mask, positions), total the cache length after the step (masked slot included).
func (m *Model) forwardResident(st *State, in map[string]*ortrun.Tensor, n, total int64) ([]float32, error) {
	var tmp []*ortrun.Buffer
	defer func() {
		for _, b := range tmp {
			b.Close()
		}
	}()
	inputs, outputs := map[string]*ortrun.Buffer{}, map[string]*ortrun.Buffer{}
	for name, t := range in {
		b, err := m.upload(t)
		if err != nil {
			return nil, err
		}
		tmp, inputs[name] = append(tmp, b), b
	}
	for k, b := range st.bufs {
		inputs[k] = b
	}
	for k, b := range m.extraBuf {
		inputs[k] = b
	}
	logits, err := m.sess.NewBuffer(ortrun.Float32, []int64{1, n, int64(m.vocab)})
	if err != nil {
		return nil, err
	}
	tmp, outputs[export.Logits] = append(tmp, logits), logits
	next := map[string]*ortrun.Buffer{}
	for i := 0; i < m.layers; i++ {
		for past, present := range map[string]string{export.PastKey(i): export.PresentKey(i), export.PastValue(i): export.PresentValue(i)} {
			b, err := m.sess.NewBuffer(m.dt, []int64{1, m.kvHeads, total, m.headDim})
			if err != nil {
				closeAll(next)
				return nil, err
			}
			next[past], outputs[present] = b, b
		}
	}
	if err := m.bindRun(inputs, outputs); err != nil {
		closeAll(next)
		return nil, err
	}
	lt, err := m.copier.Download(logits)
	if err != nil {
		closeAll(next)
		return nil, err
	}
	closeAll(st.bufs)
	st.bufs = next
	return floats(lt), nil
}

// bindRun runs the session once on the given buffers.
func (m *Model) bindRun(inputs, outputs map[string]*ortrun.Buffer) error {
	bd, err := m.sess.Bind(inputs, outputs, -1)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	defer bd.Close()
	return bd.Run()
}

func closeAll(bufs map[string]*ortrun.Buffer) {
	for _, b := range bufs {
		b.Close()
	}
}
