package ortgraph

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"google.golang.org/protobuf/proto"
)

// MaxModelProtoBytes bounds the protobuf part of a model we are willing to read. Protobuf
// itself cannot exceed 2 GiB; anything bigger must keep its weights in external data.
const MaxModelProtoBytes = 2<<30 - 1

// ErrInvalidModel is wrapped by every error caused by the contents of a model file.
var ErrInvalidModel = errors.New("invalid ONNX model")

// Model is a loaded ONNX model and the directory its external data is resolved against.
type Model struct {
	P   *onnxpb.ModelProto
	Dir string // directory of the .onnx file; external data locations are relative to it
	// Path is the file the model came from ("" for models built in memory).
	Path string
	// SHA256 of the model file's bytes (not of its external data).
	SHA256 string
}

// Load reads an ONNX model. External data is not read here: initializers keep their
// external references and TensorBytes resolves them on demand, so a multi-GB model costs
// only its protobuf part in memory until a pass needs a weight.
// MetaMaxPositions is the model metadata key under which `ortq import` and `ortq synth`
// record the model's context length (Hugging Face max_position_embeddings).
const MetaMaxPositions = "max_position_embeddings"

func Load(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("model %q is a directory: pass the .onnx file", path)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("model %q is not a regular file (a device or a pipe): pass the .onnx file", path)
	}
	if st.Size() > MaxModelProtoBytes {
		return nil, fmt.Errorf("model %q: %w: protobuf part is %d bytes (limit 2 GiB); save weights as external data", path, ErrInvalidModel, st.Size())
	}
	// Bounded by reading too: stat says 0 for a device such as /dev/zero.
	buf, err := io.ReadAll(io.LimitReader(f, MaxModelProtoBytes+1))
	if err == nil && int64(len(buf)) > MaxModelProtoBytes {
		return nil, fmt.Errorf("model %q: %w: protobuf part is larger than %d bytes (the limit for an ONNX model); save weights as external data", path,
			ErrInvalidModel, int64(MaxModelProtoBytes))
	}
	if err != nil {
		return nil, fmt.Errorf("read model %q: %w", path, err)
	}
	m := &onnxpb.ModelProto{}
	if err := proto.Unmarshal(buf, m); err != nil {
		return nil, fmt.Errorf("model %q: %w: not an ONNX protobuf (%v)", path, ErrInvalidModel, err)
	}
	if m.Graph == nil || len(m.Graph.Node) == 0 {
		return nil, fmt.Errorf("model %q: %w: no graph or an empty graph", path, ErrInvalidModel)
	}
	sum := sha256.Sum256(buf)
	abs, _ := filepath.Abs(path)
	return &Model{P: m, Dir: filepath.Dir(abs), Path: abs, SHA256: hex.EncodeToString(sum[:])}, nil
}

// OpsetVersion returns the model's import version of a domain ("" = default ONNX domain).
func (m *Model) OpsetVersion(domain string) int64 {
	if domain == "ai.onnx" {
		domain = ""
	}
	for _, o := range m.P.OpsetImport {
		d := o.Domain
		if d == "ai.onnx" {
			d = ""
		}
		if d == domain {
			return o.Version
		}
	}
	return 0
}

// SetOpset sets (or adds) a domain's import version.
func (m *Model) SetOpset(domain string, version int64) {
	for _, o := range m.P.OpsetImport {
		d := o.Domain
		if d == "ai.onnx" {
			d = ""
		}
		if d == domain {
			o.Version = version
			return
		}
	}
	m.P.OpsetImport = append(m.P.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: domain, Version: version})
}

// externalInfo parses a tensor's external_data entries.
type externalInfo struct {
	location       string
	offset, length int64
}

func parseExternal(t *onnxpb.TensorProto) (externalInfo, error) {
	var e externalInfo
	e.length = -1
	for _, kv := range t.ExternalData {
		switch kv.Key {
		case "location":
			e.location = kv.Value
		case "offset":
			v, err := strconv.ParseInt(kv.Value, 10, 64)
			if err != nil || v < 0 {
				return e, fmt.Errorf("initializer %q: %w: bad external offset %q", t.Name, ErrInvalidModel, kv.Value)
			}
			e.offset = v
		case "length":
			v, err := strconv.ParseInt(kv.Value, 10, 64)
			if err != nil || v < 0 {
				return e, fmt.Errorf("initializer %q: %w: bad external length %q", t.Name, ErrInvalidModel, kv.Value)
			}
			e.length = v
		}
	}
	if e.location == "" {
		return e, fmt.Errorf("initializer %q: %w: external data without a location", t.Name, ErrInvalidModel)
	}
	return e, nil
}

// safeJoin resolves an external-data location inside dir. Locations that leave the
// model's directory (absolute paths, "..", symlinks pointing out) are refused: a model file
// is untrusted input and must not make us read arbitrary files.
func safeJoin(dir, location string) (string, error) {
	if filepath.IsAbs(location) || strings.HasPrefix(location, "/") {
		return "", fmt.Errorf("external data location %q is absolute: only paths inside the model directory are allowed", location)
	}
	clean := filepath.Clean(filepath.FromSlash(location))
	if clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("external data location %q leaves the model directory", location)
	}
	p := filepath.Join(dir, clean)
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("external data %q: %w", location, err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(realDir, real)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("external data location %q resolves outside the model directory", location)
	}
	return real, nil
}

// ExternalExtent says where an initializer stored as external data lies: its file, resolved
// inside the model's directory as TensorBytes resolves it, the offset, and the length (-1
// when the entry gives none). ok is false for an initializer held in the model file.
func (m *Model) ExternalExtent(t *onnxpb.TensorProto) (path string, offset, length int64, ok bool, err error) {
	if t.DataLocation != onnxpb.TensorProto_EXTERNAL && len(t.ExternalData) == 0 {
		return "", 0, 0, false, nil
	}
	e, err := parseExternal(t)
	if err != nil {
		return "", 0, 0, true, err
	}
	if path, err = safeJoin(m.Dir, e.location); err != nil {
		return "", 0, 0, true, fmt.Errorf("initializer %q: %w: %v", t.Name, ErrInvalidModel, err)
	}
	return path, e.offset, e.length, true, nil
}

// TensorBytes returns the little-endian raw bytes of an initializer, reading external data
// when needed. Typed fields (float_data, int64_data, ...) are converted to raw form.
func (m *Model) TensorBytes(t *onnxpb.TensorProto) ([]byte, error) {
	if t.DataLocation == onnxpb.TensorProto_EXTERNAL || len(t.ExternalData) > 0 {
		e, err := parseExternal(t)
		if err != nil {
			return nil, err
		}
		p, err := safeJoin(m.Dir, e.location)
		if err != nil {
			return nil, fmt.Errorf("initializer %q: %w: %v", t.Name, ErrInvalidModel, err)
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("initializer %q: %w", t.Name, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		// dims and the length field are untrusted: check them (overflow included) against
		// the file before allocating anything from them.
		want, err := checkedByteSize(t)
		if err != nil {
			return nil, err
		}
		if e.length < 0 {
			e.length = want
		}
		if e.length < 0 {
			return nil, fmt.Errorf("initializer %q: %w: external data of type %s needs a length field", t.Name, ErrInvalidModel, DTypeName(t.DataType))
		}
		if want >= 0 && e.length != want {
			return nil, fmt.Errorf("initializer %q: %w: external length %d, but dims/type need %d bytes", t.Name, ErrInvalidModel, e.length, want)
		}
		if e.offset > st.Size() || e.length > st.Size()-e.offset {
			return nil, fmt.Errorf("initializer %q: %w: external data %q is %d bytes, tensor needs [%d, %d)", t.Name, ErrInvalidModel, e.location, st.Size(),
				e.offset, e.offset+e.length)
		}
		buf := make([]byte, e.length)
		if _, err := f.ReadAt(buf, e.offset); err != nil {
			return nil, fmt.Errorf("initializer %q: read external data: %w", t.Name, err)
		}
		return buf, nil
	}
	return rawFromTyped(t)
}

// checkedByteSize is ByteSize for untrusted dims: negative dimensions and products that
// overflow int64 are errors instead of wrapping.
func checkedByteSize(t *onnxpb.TensorProto) (int64, error) {
	n := int64(1)
	for _, d := range t.Dims {
		if d < 0 || (d != 0 && n > math.MaxInt64/d) {
			return 0, fmt.Errorf("initializer %q: %w: dims %v are negative or overflow", t.Name, ErrInvalidModel, t.Dims)
		}
		n *= d
	}
	switch onnxpb.TensorProto_DataType(t.DataType) {
	case onnxpb.TensorProto_UINT4, onnxpb.TensorProto_INT4, onnxpb.TensorProto_FLOAT4E2M1:
		return n/2 + n%2, nil
	}
	sz := ElemSize(t.DataType)
	if sz < 0 {
		return -1, nil
	}
	if n > math.MaxInt64/int64(sz) {
		return 0, fmt.Errorf("initializer %q: %w: dims %v overflow", t.Name, ErrInvalidModel, t.Dims)
	}
	return n * int64(sz), nil
}

// ByteSize is the number of bytes a tensor's data occupies in raw form, or -1 when the
// element type has no fixed size (strings).
func ByteSize(t *onnxpb.TensorProto) int64 {
	n := NumElements(t.Dims)
	switch onnxpb.TensorProto_DataType(t.DataType) {
	case onnxpb.TensorProto_UINT4, onnxpb.TensorProto_INT4, onnxpb.TensorProto_FLOAT4E2M1:
		return (n + 1) / 2
	}
	sz := ElemSize(t.DataType)
	if sz < 0 {
		return -1
	}
	return n * int64(sz)
}

// NumElements multiplies dims (1 for a scalar).
func NumElements(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return n
}

// ElemSize is the byte size of one element of an ONNX data type; -1 for strings and
// sub-byte types.
func ElemSize(dt int32) int {
	switch onnxpb.TensorProto_DataType(dt) {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_INT32, onnxpb.TensorProto_UINT32:
		return 4
	case onnxpb.TensorProto_DOUBLE, onnxpb.TensorProto_INT64, onnxpb.TensorProto_UINT64, onnxpb.TensorProto_COMPLEX64:
		return 8
	case onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_BFLOAT16, onnxpb.TensorProto_INT16, onnxpb.TensorProto_UINT16:
		return 2
	case onnxpb.TensorProto_UINT8, onnxpb.TensorProto_INT8, onnxpb.TensorProto_BOOL,
		onnxpb.TensorProto_FLOAT8E4M3FN, onnxpb.TensorProto_FLOAT8E4M3FNUZ, onnxpb.TensorProto_FLOAT8E5M2, onnxpb.TensorProto_FLOAT8E5M2FNUZ:
		return 1
	case onnxpb.TensorProto_COMPLEX128:
		return 16
	}
	return -1
}

// Save writes one model to path atomically with its large initializers in dataName.
func (m *Model) Save(path, dataName string, minExternal int) (int64, error) {
	return SaveShared(filepath.Dir(path), []string{filepath.Base(path)}, []*Model{m}, dataName, minExternal)
}

// SaveShared writes several models into dir (files[i] holds models[i]) with one shared
// external data file: an initializer of the same name in several models is written once and
// every model points at the same bytes, so a training and an evaluation graph of one base
// model cost one copy of the weights on disk. Same-named initializers must have equal
// bytes. Initializers of at least minExternal bytes go to dataName ("" keeps everything
// inline); ones that already point at external data are always copied into the new file,
// so the output never depends on the input's directory. Every file is written to a temp
// path and renamed. It returns the size of the data file.
func SaveShared(dir string, files []string, models []*Model, dataName string, minExternal int) (int64, error) {
	d, err := SaveSharedData(dir, files, models, dataName, minExternal)
	return d.Size, err
}

// DataSum is the size and SHA-256 (hex) of the external data file SaveSharedData wrote.
type DataSum struct {
	Size   int64
	SHA256 string
}

// SaveSharedData is SaveShared that also returns the data file's SHA-256, computed while
// the bytes are written (no second pass over a file of gigabytes).
func SaveSharedData(dir string, files []string, models []*Model, dataName string, minExternal int) (DataSum, error) {
	var tmpData *os.File
	fileSum := sha256.New()
	d := &sharedData{name: dataName, minExternal: int64(minExternal), done: map[string]placedData{},
		byContent: map[[32]byte][]*onnxpb.StringStringEntryProto{}}
	if dataName != "" {
		var err error
		tmpData, err = os.CreateTemp(dir, ".tmp-"+dataName+"-*")
		if err != nil {
			return DataSum{}, fmt.Errorf("save model: %w", err)
		}
		d.w = io.MultiWriter(tmpData, fileSum)
		defer func() {
			if tmpData != nil {
				tmpData.Close()
				os.Remove(tmpData.Name())
			}
		}()
	}
	outs := make([][]byte, len(models))
	for i, m := range models {
		out := proto.Clone(m.P).(*onnxpb.ModelProto)
		if err := d.placeGraph(m, out.Graph); err != nil {
			return DataSum{}, fmt.Errorf("save model %q: %w", files[i], err)
		}
		buf, err := proto.Marshal(out)
		if err != nil {
			return DataSum{}, fmt.Errorf("save model %q: %w", files[i], err)
		}
		outs[i] = buf
	}
	if tmpData != nil {
		if err := tmpData.Sync(); err != nil {
			return DataSum{}, err
		}
		if err := tmpData.Close(); err != nil {
			return DataSum{}, err
		}
		if err := os.Rename(tmpData.Name(), filepath.Join(dir, dataName)); err != nil {
			return DataSum{}, err
		}
		tmpData = nil
	}
	for i, buf := range outs {
		if err := fsutil.WriteFile(filepath.Join(dir, files[i]), buf, 0o644); err != nil {
			return DataSum{}, err
		}
	}
	sum := DataSum{Size: d.written}
	if dataName == "" {
		return sum, nil
	}
	sum.SHA256 = hex.EncodeToString(fileSum.Sum(nil))
	return sum, nil
}

// sharedData is SaveSharedData's external data file as it is written: w (nil when
// everything stays inline), the bytes written so far, and where each initializer went.
type sharedData struct {
	name        string
	minExternal int64
	w           io.Writer
	written     int64
	done        map[string]placedData
	// byContent: identical bytes under different names (e.g. a 4-bit weight and its UINT4
	// view for the backward pass) are stored once and referenced twice.
	byContent map[[32]byte][]*onnxpb.StringStringEntryProto
}

// placedData is where an initializer's bytes went, and their hash.
type placedData struct {
	refs []*onnxpb.StringStringEntryProto
	sum  [32]byte
}

// placeGraph points the initializers of g (a clone of m's graph) and of its subgraphs at
// the shared data file, or makes them inline.
func (d *sharedData) placeGraph(m *Model, g *onnxpb.GraphProto) error {
	for _, t := range g.Initializer {
		if err := d.place(m, t); err != nil {
			return err
		}
	}
	for _, n := range g.Node {
		for _, a := range n.Attribute {
			if a.G != nil {
				if err := d.placeGraph(m, a.G); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// place writes one initializer's bytes to the data file (once per name and content) and
// points it there, or makes it inline when it is small or there is no data file.
func (d *sharedData) place(m *Model, t *onnxpb.TensorProto) error {
	external := t.DataLocation == onnxpb.TensorProto_EXTERNAL || len(t.ExternalData) > 0
	if d.w == nil || (!external && ByteSize(t) < d.minExternal) {
		if external {
			raw, err := m.TensorBytes(t)
			if err != nil {
				return err
			}
			t.ExternalData, t.DataLocation, t.RawData = nil, onnxpb.TensorProto_DEFAULT, raw
		}
		return nil
	}
	raw, err := m.TensorBytes(t)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	p, seen := d.done[t.Name]
	if seen && p.sum != sum {
		return fmt.Errorf("initializer %q differs between the models saved together", t.Name)
	}
	if refs, ok := d.byContent[sum]; !seen && ok {
		p, seen = placedData{sum: sum, refs: refs}, true
		d.done[t.Name] = p
	}
	if !seen {
		off, err := d.append(raw)
		if err != nil {
			return err
		}
		p = placedData{sum: sum, refs: []*onnxpb.StringStringEntryProto{
			{Key: "location", Value: d.name},
			{Key: "offset", Value: strconv.FormatInt(off, 10)},
			{Key: "length", Value: strconv.Itoa(len(raw))},
		}}
		d.done[t.Name] = p
		d.byContent[sum] = p.refs
	}
	t.RawData, t.FloatData, t.Int64Data, t.Int32Data, t.DoubleData, t.Uint64Data = nil, nil, nil, nil, nil, nil
	t.DataLocation = onnxpb.TensorProto_EXTERNAL
	t.ExternalData = p.refs
	return nil
}

// append writes raw at the next 4096-byte boundary of the data file and returns its
// offset: ONNX Runtime memory-maps external data whose offset is page-aligned instead of
// copying it.
func (d *sharedData) append(raw []byte) (int64, error) {
	if pad := (4096 - d.written%4096) % 4096; pad > 0 {
		if _, err := d.w.Write(make([]byte, pad)); err != nil {
			return 0, fmt.Errorf("write external data: %w", err)
		}
		d.written += pad
	}
	if _, err := d.w.Write(raw); err != nil {
		return 0, fmt.Errorf("write external data: %w", err)
	}
	off := d.written
	d.written += int64(len(raw))
	return off, nil
}
