package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
)

// MaxHeader is the largest header accepted (the format's own reference limit, 100 MB).
const MaxHeader = 100_000_000

// DType names a tensor element type as safetensors spells it.
type DType string

// The element types ortq reads and writes as values (Supported); the header validator
// knows the size of every type of the format (Size).
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
)

// Size is the element size in bytes of any dtype of the format (0 for a name the format
// does not have).
func (d DType) Size() int {
	switch d {
	case "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0":
		return 1
	case "I16", "U16", F16, BF16:
		return 2
	case "I32", "U32", F32:
		return 4
	case "I64", "U64", "F64":
		return 8
	}
	return 0
}

// Supported reports whether ortq reads and writes values of this dtype (F32, F16, BF16,
// I64); other dtypes may sit in a file that is read only in part (a checkpoint).
func (d DType) Supported() bool {
	switch d {
	case F32, F16, BF16, I64:
		return true
	}
	return false
}

// Entry is one tensor of a validated header.
type Entry struct {
	Name  string
	DType DType
	Shape []int64
	// Begin and End are offsets into the data section (after the header):
	// End−Begin = NumElements(Shape)·DType.Size().
	Begin, End int64
}

// Header is a validated header: the entries in data-section order.
type Header struct {
	Entries  []Entry
	Metadata map[string]string
	// DataStart is the file offset of the data section (8 + the header's length).
	DataStart int64
}

// Section returns a reader over the entry's bytes in the file r, which the header was
// read from.
func (h *Header) Section(r io.ReaderAt, e Entry) *io.SectionReader {
	return io.NewSectionReader(r, h.DataStart+e.Begin, e.End-e.Begin)
}

// NumElements is the product of shape (1 for a scalar); the header validator has checked
// that it does not overflow.
func NumElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// ReadHeader reads and validates the header of a file of size bytes through r. The
// length prefix is checked against MaxHeader and size before the header is allocated.
// Errors name the tensor; the caller adds the file.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, fmt.Errorf("file too short for a header (%d bytes)", size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("reading the header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if err := checkHeaderLen(n, size); err != nil {
		return nil, err
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("reading the header: %w", err)
	}
	return parseHeader(hdr, size-8-int64(n))
}

func checkHeaderLen(n uint64, fileSize int64) error {
	if n > MaxHeader {
		return fmt.Errorf("header length %d exceeds the %d-byte limit: not a safetensors file or corrupt", n, MaxHeader)
	}
	if n < 2 || n > uint64(fileSize)-8 {
		return fmt.Errorf("header length %d does not fit the file's %d bytes: truncated or corrupt", n, fileSize)
	}
	return nil
}

type headerEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// parseHeader validates the header JSON of a file whose data section is dataLen bytes.
func parseHeader(hdr []byte, dataLen int64) (*Header, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("header is not a JSON object: %w", err)
	}
	h := &Header{DataStart: 8 + int64(len(hdr)), Metadata: map[string]string{}}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &h.Metadata); err != nil {
				return nil, fmt.Errorf("__metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		e, err := checkEntry(name, msg, dataLen)
		if err != nil {
			return nil, err
		}
		h.Entries = append(h.Entries, e)
	}
	// The format requires the tensors to tile the data section exactly, with no gaps or
	// overlaps (hidden bytes or aliasing are signs of tampering).
	sort.Slice(h.Entries, func(i, j int) bool {
		a, b := h.Entries[i], h.Entries[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		if a.End != b.End {
			return a.End < b.End
		}
		return a.Name < b.Name
	})
	pos := int64(0)
	for _, e := range h.Entries {
		if e.Begin != pos {
			return nil, fmt.Errorf("tensor %q: data_offsets start at %d, expected %d (gap or overlap)", e.Name, e.Begin, pos)
		}
		pos = e.End
	}
	if pos != dataLen {
		return nil, fmt.Errorf("tensors cover %d data bytes but the file has %d after the header", pos, dataLen)
	}
	return h, nil
}

// checkEntry validates one tensor's entry: a dtype of the format, a shape whose byte size
// fits int64, offsets inside the data section holding exactly that many bytes.
func checkEntry(name string, msg json.RawMessage, dataLen int64) (Entry, error) {
	var e headerEntry
	d := json.NewDecoder(bytes.NewReader(msg))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return Entry{}, fmt.Errorf("tensor %q: bad header entry: %w", name, err)
	}
	dt := DType(e.DType)
	size := dt.Size()
	if size == 0 {
		return Entry{}, fmt.Errorf("tensor %q: unknown dtype %q", name, e.DType)
	}
	if e.Shape == nil {
		return Entry{}, fmt.Errorf("tensor %q: missing shape", name)
	}
	if len(e.DataOffsets) != 2 {
		return Entry{}, fmt.Errorf("tensor %q: data_offsets must be [begin, end]", name)
	}
	numel := int64(1)
	for _, dim := range e.Shape {
		if dim < 0 {
			return Entry{}, fmt.Errorf("tensor %q: negative dimension in shape %v", name, e.Shape)
		}
		if dim != 0 && numel > math.MaxInt64/dim {
			return Entry{}, fmt.Errorf("tensor %q: shape %v overflows", name, e.Shape)
		}
		numel *= dim
	}
	if numel > math.MaxInt64/int64(size) {
		return Entry{}, fmt.Errorf("tensor %q: shape %v of %s overflows", name, e.Shape, dt)
	}
	begin, end := e.DataOffsets[0], e.DataOffsets[1]
	if end < begin || end > uint64(dataLen) {
		return Entry{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] outside the %d data bytes", name, begin, end, dataLen)
	}
	if need := numel * int64(size); int64(end-begin) != need {
		return Entry{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] hold %d bytes, shape %v of %s needs %d", name, begin, end, end-begin, e.Shape, dt, need)
	}
	return Entry{Name: name, DType: dt, Shape: e.Shape, Begin: int64(begin), End: int64(end)}, nil
}
