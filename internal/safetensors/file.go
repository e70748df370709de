package safetensors

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"os"

	stlib "github.com/nlpodyssey/safetensors"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/half"
)

// Tensor is a named tensor with little-endian raw data.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// NumElements is the product of Shape (1 for a scalar).
func (t Tensor) NumElements() int64 { return NumElements(t.Shape) }

// F32Tensor makes an F32 tensor from values (copied).
func F32Tensor(name string, shape []int64, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return Tensor{Name: name, DType: F32, Shape: cloneShape(shape), Data: b}
}

// F16Tensor rounds values to binary16 (nearest even), e.g. for a 16-bit adapter.
func F16Tensor(name string, shape []int64, v []float32) Tensor {
	return halfTensor(name, F16, shape, half.EncodeFloat16(v))
}

// BF16Tensor rounds values to bfloat16 (nearest even).
func BF16Tensor(name string, shape []int64, v []float32) Tensor {
	return halfTensor(name, BF16, shape, half.EncodeBFloat16(v))
}

func halfTensor(name string, dt DType, shape []int64, h []uint16) Tensor {
	b := make([]byte, 2*len(h))
	for i, x := range h {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return Tensor{Name: name, DType: dt, Shape: cloneShape(shape), Data: b}
}

// I64Tensor makes an I64 tensor (copied).
func I64Tensor(name string, shape []int64, v []int64) Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return Tensor{Name: name, DType: I64, Shape: cloneShape(shape), Data: b}
}

// Float32s decodes F32, F16 or BF16 data to float32 (exact widening).
func (t Tensor) Float32s() ([]float32, error) {
	switch t.DType {
	case F32, F16, BF16:
		out := make([]float32, len(t.Data)/t.DType.Size())
		DecodeFloat32s(t.DType, t.Data, out)
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q is %s, not a float type", t.Name, t.DType)
}

// DecodeFloat32s widens len(out) little-endian F32, F16 or BF16 values of b to float32
// (other dtypes leave out as it is; callers check the dtype first).
func DecodeFloat32s(dt DType, b []byte, out []float32) {
	switch dt {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = half.Float16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = half.BFloat16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
}

// Int64s decodes I64 data.
func (t Tensor) Int64s() ([]int64, error) {
	if t.DType != I64 {
		return nil, fmt.Errorf("tensor %q is %s, not I64", t.Name, t.DType)
	}
	out := make([]int64, len(t.Data)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return out, nil
}

func (t Tensor) validate() error {
	if t.Name == "" || t.Name == "__metadata__" {
		return fmt.Errorf("invalid tensor name %q", t.Name)
	}
	if !t.DType.Supported() {
		return fmt.Errorf("tensor %q: unsupported dtype %q (F32, F16, BF16 and I64 are)", t.Name, string(t.DType))
	}
	size := int64(t.DType.Size())
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return fmt.Errorf("tensor %q: shape %v overflows", t.Name, t.Shape)
		}
		n *= d
	}
	if n > math.MaxInt64/size || n*size != int64(len(t.Data)) {
		return fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, data has %d", t.Name, t.Shape, t.DType, n*size, len(t.Data))
	}
	return nil
}

func (d DType) lib() stlib.DType {
	switch d {
	case F16:
		return stlib.F16
	case BF16:
		return stlib.BF16
	case I64:
		return stlib.I64
	}
	return stlib.F32
}

// libView adapts Tensor to the library's View interface.
type libView struct {
	dt    stlib.DType
	shape []uint64
	data  []byte
}

func (v libView) DType() stlib.DType { return v.dt }
func (v libView) Shape() []uint64    { return v.shape }
func (v libView) Data() []byte       { return v.data }
func (v libView) DataLen() uint64    { return uint64(len(v.data)) }

// Write writes tensors and string metadata (`__metadata__`) to path atomically
// (fsutil.WriteFileAtomic).
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	views := make(map[string]libView, len(tensors))
	for _, t := range tensors {
		if err := t.validate(); err != nil {
			return fmt.Errorf("write safetensors %q: %w", path, err)
		}
		if _, dup := views[t.Name]; dup {
			return fmt.Errorf("write safetensors %q: tensor %q given twice", path, t.Name)
		}
		shape := make([]uint64, len(t.Shape))
		for i, d := range t.Shape {
			shape[i] = uint64(d)
		}
		views[t.Name] = libView{dt: t.DType.lib(), shape: shape, data: t.Data}
	}
	var meta map[string]string
	if len(metadata) > 0 {
		meta = metadata
	}
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error {
		return stlib.SerializeToWriter(views, meta, w)
	})
}

// File is a whole file read into memory: tensors in file (offset) order.
type File struct {
	Tensors  []Tensor
	Metadata map[string]string
}

// Get returns the named tensor.
func (f *File) Get(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// ReadFile reads and validates a whole file (ReadHeader's checks, before the data is
// allocated); dtypes other than F32/F16/BF16/I64 are refused.
func ReadFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read safetensors %q: %w", path, err)
	}
	if !st.Mode().IsRegular() { // its size must be known: the header is checked against it
		return nil, fmt.Errorf("safetensors %q is not a regular file", path)
	}
	h, err := ReadHeader(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("safetensors %q: %w", path, err)
	}
	data := make([]byte, st.Size()-h.DataStart)
	if _, err := f.ReadAt(data, h.DataStart); err != nil {
		return nil, fmt.Errorf("read safetensors %q: %w", path, err)
	}
	out, err := fromHeader(h, data)
	if err != nil {
		return nil, fmt.Errorf("safetensors %q: %w", path, err)
	}
	return out, nil
}

// Parse parses a whole file held in memory (the fuzzing entry point). Tensor Data slices
// alias buf.
func Parse(buf []byte) (*File, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("file too short for a header (%d bytes)", len(buf))
	}
	n := binary.LittleEndian.Uint64(buf)
	if err := checkHeaderLen(n, int64(len(buf))); err != nil {
		return nil, err
	}
	h, err := parseHeader(buf[8:8+n], int64(len(buf))-8-int64(n))
	if err != nil {
		return nil, err
	}
	return fromHeader(h, buf[8+n:])
}

// fromHeader slices the data section by a validated header.
func fromHeader(h *Header, data []byte) (*File, error) {
	out := &File{Metadata: h.Metadata}
	for _, e := range h.Entries {
		if !e.DType.Supported() {
			return nil, fmt.Errorf("tensor %q: unsupported dtype %q (F32, F16, BF16 and I64 are)", e.Name, string(e.DType))
		}
		out.Tensors = append(out.Tensors, Tensor{Name: e.Name, DType: e.DType, Shape: e.Shape, Data: data[e.Begin:e.End:e.End]})
	}
	return out, nil
}

// cloneShape copies a shape; a scalar's shape is an empty, non-nil slice, as it reads
// back from a file.
func cloneShape(s []int64) []int64 { return append(make([]int64, 0, len(s)), s...) }
