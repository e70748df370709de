package ortrun

import (
	"fmt"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// SharedInitializers holds initializers of a model that name the same bytes (the 4-bit
// weights as MatMulNBits' uint8 tensor and as DequantizeLinear's UINT4 view) in one buffer
// on a device, with a view per name, for a session created with Options.Initializers set to
// Initializers: the session then holds the bytes once instead of once per name.
//
// The buffer is allocated by a helper session of its own on the device (an Identity graph):
// ONNX Runtime 1.29 allocates device memory only through a session's allocator, and the
// session that will read the buffer does not exist yet. On a GPU the helper is an execution
// provider with some memory of its own.
type SharedInitializers struct {
	// Initializers maps every shared name to its view (Options.Initializers).
	Initializers map[string]*Buffer
	// Bytes is the size of the buffer.
	Bytes  int64
	helper *Session
	buf    *Buffer
}

// LoadSharedInitializers reads the initializers named in groups from the model at modelPath,
// each stored as external data, where the names of a group must point at the same bytes;
// copies every group's bytes once into one buffer on opts.Device; and gives every name a view
// of its group's bytes with its own element type and shape. The model's external data is
// resolved and checked as ortgraph reads it (inside the model's directory, sizes against
// dims and file).
func LoadSharedInitializers(modelPath string, groups [][]string, opts Options) (*SharedInitializers, error) {
	m, err := ortgraph.Load(modelPath)
	if err != nil {
		return nil, err
	}
	inits := map[string]*onnxpb.TensorProto{}
	for _, t := range m.P.GetGraph().GetInitializer() {
		inits[t.Name] = t
	}
	offsets := make([]int64, len(groups))
	var total int64
	for i, names := range groups {
		n, err := sharedGroupBytes(m, inits, names)
		if err != nil {
			return nil, fmt.Errorf("shared initializers of %q: %w", modelPath, err)
		}
		offsets[i] = total
		total += (n + 255) / 256 * 256 // each group at a 256-byte boundary
	}
	helper, err := NewSessionFromBytes(mustIdentityModel(), Options{Device: opts.Device, IntraOpThreads: 1})
	if err != nil {
		return nil, fmt.Errorf("shared initializers: helper session: %w", err)
	}
	s := &SharedInitializers{Initializers: map[string]*Buffer{}, Bytes: total, helper: helper}
	if s.buf, err = helper.NewBuffer(Uint8, []int64{max(total, 1)}); err != nil {
		s.Close()
		return nil, fmt.Errorf("shared initializers: %w", err)
	}
	cp := NewCopier(Options{Device: opts.Device})
	defer cp.Close()
	for i, names := range groups {
		if err := s.load(cp, m, inits, names, offsets[i]); err != nil {
			s.Close()
			return nil, fmt.Errorf("shared initializers of %q: %w", modelPath, err)
		}
	}
	return s, nil
}

// sharedGroupBytes checks that every name of a group is an initializer stored as external
// data at the same place as the first, and returns the group's byte length.
func sharedGroupBytes(m *ortgraph.Model, inits map[string]*onnxpb.TensorProto, names []string) (int64, error) {
	if len(names) == 0 {
		return 0, fmt.Errorf("an empty group")
	}
	var path0 string
	var off0, len0 int64
	for i, n := range names {
		t := inits[n]
		if t == nil {
			return 0, fmt.Errorf("%q is not an initializer", n)
		}
		path, off, length, ok, err := m.ExternalExtent(t)
		if err != nil {
			return 0, err
		}
		if !ok || length < 0 {
			return 0, fmt.Errorf("%q is not stored as external data with a length", n)
		}
		if i == 0 {
			path0, off0, len0 = path, off, length
		} else if path != path0 || off != off0 || length != len0 {
			return 0, fmt.Errorf("%q does not name the bytes of %q", n, names[0])
		}
	}
	return len0, nil
}

// load copies one group's bytes to offset of the buffer and makes a view for every name.
func (s *SharedInitializers) load(cp *Copier, m *ortgraph.Model, inits map[string]*onnxpb.TensorProto, names []string, offset int64) error {
	raw, err := m.TensorBytes(inits[names[0]])
	if err != nil {
		return err
	}
	bytesView, err := s.buf.ViewAt(offset, Uint8, []int64{int64(len(raw))})
	if err != nil {
		return err
	}
	defer bytesView.Close()
	if err := cp.Upload(bytesView, &Tensor{DType: Uint8, Shape: []int64{int64(len(raw))}, Data: raw}); err != nil {
		return fmt.Errorf("copying %q: %w", names[0], err)
	}
	for _, n := range names {
		t := inits[n]
		v, err := s.buf.ViewAt(offset, DType(t.DataType), t.Dims)
		if err != nil {
			return fmt.Errorf("%q: %w", n, err)
		}
		s.Initializers[n] = v
	}
	return nil
}

// Close frees the views, the buffer and the helper session; the sessions that read them
// must be closed first.
func (s *SharedInitializers) Close() {
	if s == nil {
		return
	}
	for n, v := range s.Initializers {
		v.Close()
		delete(s.Initializers, n)
	}
	s.buf.Close()
	s.buf = nil
	if s.helper != nil {
		s.helper.Close()
		s.helper = nil
	}
}

func mustIdentityModel() []byte {
	b, err := identityModel([]*Buffer{{DType: Uint8, Shape: []int64{1}}})
	if err != nil {
		panic("ortrun: identity model: " + err.Error())
	}
	return b
}
