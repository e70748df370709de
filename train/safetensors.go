package train

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/half"
	"io"
	"math"
	"os"
	"sort"

	"github.com/nlpodyssey/safetensors"
)

// Safetensors I/O. Writing uses github.com/nlpodyssey/safetensors
// (SerializeToWriter, which also orders tensors by alignment and pads the
// header to 8 bytes like the reference implementation). Reading checks the
// header ourselves first — its size before any allocation, then every
// tensor's dtype, shape and offsets — so that errors name the file and the
// tensor, and so a hostile length field cannot make us allocate; the library
// then parses the validated buffer.

// MaxSafetensorsHeader is the largest header accepted (the format's own
// reference limit, 100 MB).
const MaxSafetensorsHeader = 100_000_000

// DType names a tensor element type as safetensors spells it.
type DType string

// Supported element types.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
)

// Size is the element size in bytes (0 for an unsupported type).
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case I64:
		return 8
	}
	return 0
}

func (d DType) lib() (safetensors.DType, error) {
	switch d {
	case F32:
		return safetensors.F32, nil
	case F16:
		return safetensors.F16, nil
	case BF16:
		return safetensors.BF16, nil
	case I64:
		return safetensors.I64, nil
	}
	return 0, fmt.Errorf("unsupported dtype %q (F32, F16, BF16 and I64 are)", string(d))
}

// Tensor is a named tensor with little-endian raw data.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// NumElements is the product of Shape (1 for a scalar).
func (t Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

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
	case F32:
		out := make([]float32, len(t.Data)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
		return out, nil
	case F16, BF16:
		out := make([]float32, len(t.Data)/2)
		for i := range out {
			h := binary.LittleEndian.Uint16(t.Data[2*i:])
			if t.DType == F16 {
				out[i] = half.Float16ToFloat32(h)
			} else {
				out[i] = half.BFloat16ToFloat32(h)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q is %s, not a float type", t.Name, t.DType)
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
	size := t.DType.Size()
	if size == 0 {
		return fmt.Errorf("tensor %q: unsupported dtype %q (F32, F16, BF16 and I64 are)", t.Name, string(t.DType))
	}
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
	if n > math.MaxInt64/int64(size) || n*int64(size) != int64(len(t.Data)) {
		return fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, data has %d", t.Name, t.Shape, t.DType, n*int64(size), len(t.Data))
	}
	return nil
}

// libView adapts Tensor to the library's View interface.
type libView struct {
	dt    safetensors.DType
	shape []uint64
	data  []byte
}

func (v libView) DType() safetensors.DType { return v.dt }
func (v libView) Shape() []uint64          { return v.shape }
func (v libView) Data() []byte             { return v.data }
func (v libView) DataLen() uint64          { return uint64(len(v.data)) }

// WriteSafetensors writes tensors and string metadata (`__metadata__`) to
// path atomically (WriteFileAtomic).
func WriteSafetensors(path string, tensors []Tensor, metadata map[string]string) error {
	views := make(map[string]libView, len(tensors))
	for _, t := range tensors {
		if err := t.validate(); err != nil {
			return fmt.Errorf("write safetensors %q: %w", path, err)
		}
		if _, dup := views[t.Name]; dup {
			return fmt.Errorf("write safetensors %q: tensor %q given twice", path, t.Name)
		}
		dt, _ := t.DType.lib()
		shape := make([]uint64, len(t.Shape))
		for i, d := range t.Shape {
			shape[i] = uint64(d)
		}
		views[t.Name] = libView{dt: dt, shape: shape, data: t.Data}
	}
	var meta map[string]string
	if len(metadata) > 0 {
		meta = metadata
	}
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error {
		return safetensors.SerializeToWriter(views, meta, w)
	})
}

// SafetensorsFile is a parsed file: tensors in file (offset) order.
type SafetensorsFile struct {
	Tensors  []Tensor
	Metadata map[string]string
}

// Get returns the named tensor.
func (f *SafetensorsFile) Get(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// ReadSafetensors reads and validates a file. The header length is checked
// against MaxSafetensorsHeader and the file size before anything is
// allocated from it. Other dtypes than F32/F16/BF16/I64 are rejected.
func ReadSafetensors(path string) (*SafetensorsFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read safetensors %q: %w", path, err)
	}
	size := st.Size()
	var lenBuf [8]byte
	if _, err := io.ReadFull(f, lenBuf[:]); err != nil {
		return nil, fmt.Errorf("safetensors %q: file too short for a header (%d bytes)", path, size)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if err := checkHeaderLen(n, uint64(size)); err != nil {
		return nil, fmt.Errorf("safetensors %q: %w", path, err)
	}
	buf := make([]byte, size)
	copy(buf, lenBuf[:])
	if _, err := io.ReadFull(f, buf[8:]); err != nil {
		return nil, fmt.Errorf("read safetensors %q: %w", path, err)
	}
	out, err := ParseSafetensors(buf)
	if err != nil {
		return nil, fmt.Errorf("safetensors %q: %w", path, err)
	}
	return out, nil
}

func checkHeaderLen(n, fileSize uint64) error {
	if n > MaxSafetensorsHeader {
		return fmt.Errorf("header length %d exceeds the %d-byte limit: not a safetensors file or corrupt", n, MaxSafetensorsHeader)
	}
	if n < 2 || n > fileSize-8 {
		return fmt.Errorf("header length %d does not fit the file's %d bytes: truncated or corrupt", n, fileSize)
	}
	return nil
}

type headerEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// ParseSafetensors parses a whole file held in memory (the fuzzing entry
// point). Tensor Data slices alias buf.
func ParseSafetensors(buf []byte) (*SafetensorsFile, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("file too short for a header (%d bytes)", len(buf))
	}
	n := binary.LittleEndian.Uint64(buf)
	if err := checkHeaderLen(n, uint64(len(buf))); err != nil {
		return nil, err
	}
	header := buf[8 : 8+n]
	dataLen := uint64(len(buf)) - 8 - n
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(header))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("header is not a JSON object: %w", err)
	}
	type span struct {
		name       string
		start, end uint64
	}
	var meta map[string]string
	var spans []span
	entries := map[string]headerEntry{}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &meta); err != nil {
				return nil, fmt.Errorf("__metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		var e headerEntry
		d := json.NewDecoder(bytes.NewReader(msg))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			return nil, fmt.Errorf("tensor %q: bad header entry: %w", name, err)
		}
		dt := DType(e.DType)
		if dt.Size() == 0 {
			return nil, fmt.Errorf("tensor %q: unsupported dtype %q (F32, F16, BF16 and I64 are)", name, e.DType)
		}
		if e.Shape == nil {
			return nil, fmt.Errorf("tensor %q: missing shape", name)
		}
		if len(e.DataOffsets) != 2 {
			return nil, fmt.Errorf("tensor %q: data_offsets must be [begin, end]", name)
		}
		numel := uint64(1)
		for _, dim := range e.Shape {
			if dim < 0 {
				return nil, fmt.Errorf("tensor %q: negative dimension in shape %v", name, e.Shape)
			}
			if dim != 0 && numel > math.MaxUint64/uint64(dim) {
				return nil, fmt.Errorf("tensor %q: shape %v overflows", name, e.Shape)
			}
			numel *= uint64(dim)
		}
		start, end := e.DataOffsets[0], e.DataOffsets[1]
		if end < start || end > dataLen {
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] outside the %d data bytes", name, start, end, dataLen)
		}
		if numel > math.MaxUint64/uint64(dt.Size()) || end-start != numel*uint64(dt.Size()) {
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] hold %d bytes, shape %v of %s needs %d", name, start, end, end-start, e.Shape, dt, numel*uint64(dt.Size()))
		}
		entries[name] = e
		spans = append(spans, span{name, start, end})
	}
	// The format requires the tensors to tile the data section exactly, with
	// no gaps or overlaps (hidden bytes or aliasing are signs of tampering).
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].start != spans[j].start {
			return spans[i].start < spans[j].start
		}
		return spans[i].end < spans[j].end
	})
	pos := uint64(0)
	for _, s := range spans {
		if s.start != pos {
			return nil, fmt.Errorf("tensor %q: data_offsets start at %d, expected %d (gap or overlap)", s.name, s.start, pos)
		}
		pos = s.end
	}
	if pos != dataLen {
		return nil, fmt.Errorf("tensors cover %d data bytes but the file has %d after the header", pos, dataLen)
	}
	// The library re-validates the same invariants; a disagreement would be
	// our bug, but surface it as an error rather than trusting either alone.
	st, err := safetensors.Deserialize(buf)
	if err != nil {
		return nil, fmt.Errorf("invalid safetensors: %w", err)
	}
	out := &SafetensorsFile{Metadata: meta}
	for _, s := range spans {
		tv, ok := st.Tensor(s.name)
		if !ok {
			return nil, fmt.Errorf("tensor %q: not found by the safetensors parser", s.name)
		}
		e := entries[s.name]
		out.Tensors = append(out.Tensors, Tensor{Name: s.name, DType: DType(e.DType), Shape: e.Shape, Data: tv.Data()})
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	return out, nil
}

// cloneShape copies a shape; a scalar's shape is an empty, non-nil slice, as
// it reads back from a file.
func cloneShape(s []int64) []int64 { return append(make([]int64, 0, len(s)), s...) }
