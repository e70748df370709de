package ortrun

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"

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

// initializerData is where one initializer's bytes lie in a model's external data.
type initializerData struct {
	dtype          DType
	dims           []int64
	file           string
	offset, length int64
}

// LoadSharedInitializers reads the initializers named in groups from the model at modelPath,
// each stored as external data, where the names of a group must point at the same bytes;
// copies every group's bytes once into one buffer on opts.Device; and gives every name a view
// of its group's bytes with its own element type and shape.
func LoadSharedInitializers(modelPath string, groups [][]string, opts Options) (*SharedInitializers, error) {
	data, err := readInitializerData(modelPath)
	if err != nil {
		return nil, err
	}
	offsets := make([]int64, len(groups))
	var total int64
	for i, names := range groups {
		if len(names) == 0 {
			return nil, fmt.Errorf("shared initializers of %q: group %d is empty", modelPath, i)
		}
		first, ok := data[names[0]]
		if !ok {
			return nil, fmt.Errorf("shared initializers of %q: %q is not an initializer stored as external data", modelPath, names[0])
		}
		for _, n := range names[1:] {
			d, ok := data[n]
			if !ok || d.file != first.file || d.offset != first.offset || d.length != first.length {
				return nil, fmt.Errorf("shared initializers of %q: %q does not name the bytes of %q", modelPath, n, names[0])
			}
		}
		offsets[i] = total
		total += (first.length + 255) / 256 * 256 // each group at a 256-byte boundary
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
		if err := s.load(cp, data, names, offsets[i]); err != nil {
			s.Close()
			return nil, fmt.Errorf("shared initializers of %q: %w", modelPath, err)
		}
	}
	return s, nil
}

// load copies one group's bytes to offset of the buffer and makes a view for every name.
func (s *SharedInitializers) load(cp *Copier, data map[string]initializerData, names []string, offset int64) error {
	d := data[names[0]]
	raw := make([]uint8, d.length)
	f, err := os.Open(d.file)
	if err != nil {
		return err
	}
	_, err = f.ReadAt(raw, d.offset)
	f.Close()
	if err != nil {
		return fmt.Errorf("reading %q for %q: %w", d.file, names[0], err)
	}
	bytesView, err := s.buf.ViewAt(offset, Uint8, []int64{d.length})
	if err != nil {
		return err
	}
	defer bytesView.Close()
	if err := cp.Upload(bytesView, &Tensor{DType: Uint8, Shape: []int64{d.length}, Data: raw}); err != nil {
		return fmt.Errorf("copying %q: %w", names[0], err)
	}
	for _, n := range names {
		v, err := s.buf.ViewAt(offset, data[n].dtype, data[n].dims)
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

// readInitializerData lists the model's initializers stored as external data.
func readInitializerData(modelPath string) (map[string]initializerData, error) {
	b, err := os.ReadFile(modelPath)
	if err != nil {
		return nil, err
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("model %q: %w", modelPath, err)
	}
	out := map[string]initializerData{}
	for _, t := range m.GetGraph().GetInitializer() {
		if t.DataLocation != onnxpb.TensorProto_EXTERNAL {
			continue
		}
		d := initializerData{dtype: DType(t.DataType), dims: t.Dims, length: -1}
		for _, kv := range t.ExternalData {
			switch kv.Key {
			case "location":
				d.file = filepath.Join(filepath.Dir(modelPath), kv.Value)
			case "offset":
				d.offset, err = strconv.ParseInt(kv.Value, 10, 64)
			case "length":
				d.length, err = strconv.ParseInt(kv.Value, 10, 64)
			}
			if err != nil {
				return nil, fmt.Errorf("model %q: initializer %q: external data %s: %w", modelPath, t.Name, kv.Key, err)
			}
		}
		if d.file == "" || d.length < 0 {
			return nil, fmt.Errorf("model %q: initializer %q: external data without location or length", modelPath, t.Name)
		}
		out[t.Name] = d
	}
	return out, nil
}

func mustIdentityModel() []byte {
	b, err := identityModel([]*Buffer{{DType: Uint8, Shape: []int64{1}}})
	if err != nil {
		panic("ortrun: identity model: " + err.Error())
	}
	return b
}
