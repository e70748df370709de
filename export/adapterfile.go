package export

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"

	flatbuffers "github.com/google/flatbuffers/go"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/half"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
)

// ONNX Runtime's adapter format (onnxruntime/lora/adapter_format/adapter_schema.fbs):
// root table Adapter {format_version, adapter_version, model_version, parameters:[Parameter]},
// Parameter {name, dims:[int64], data_type (the ONNX TensorProto enum), raw_data:[uint8]
// aligned to 8}, file identifier "TORT". ONNX Runtime 1.29 reads format version 1. There is
// no generated Go code for the schema upstream, so the two tables are written and read here
// with the flatbuffers runtime's builder and table accessors, field by field in schema order.
const (
	adapterFormatVersion = 1
	adapterIdentifier    = "TORT"
)

// WriteAdapterFile writes ad's A [r, in] and B [out, r] under their PEFT names (the names of
// the optional inputs of an unfused LoRAInputs graph: the concat layout, or --fuse=false) in
// the graph's float type dt, atomically. A fused export writes its own packed tensors
// (Built.AdapterParams).
func WriteAdapterFile(path string, ad *Adapter, dt int32) error {
	var ps []AdapterParam
	for _, mod := range ad.Modules {
		sh := ad.Shape[mod]
		ps = append(ps,
			AdapterParam{Name: passes.PEFTName(mod, "A"), Dims: sh[0], DType: dt, Raw: encodeFloats(ad.A[mod], dt)},
			AdapterParam{Name: passes.PEFTName(mod, "B"), Dims: sh[1], DType: dt, Raw: encodeFloats(ad.B[mod], dt)})
	}
	return writeAdapterParams(path, ps)
}

// writeAdapterParams writes ps as an .onnx_adapter file, atomically.
func writeAdapterParams(path string, ps []AdapterParam) error {
	b := flatbuffers.NewBuilder(1 << 16)
	var params []flatbuffers.UOffsetT
	for _, p := range ps {
		params = append(params, adapterParam(b, p))
	}
	b.StartVector(4, len(params), 4)
	for i := len(params) - 1; i >= 0; i-- {
		b.PrependUOffsetT(params[i])
	}
	vec := b.EndVector(len(params))
	b.StartObject(4)
	b.PrependInt32Slot(0, adapterFormatVersion, 0)
	b.PrependInt32Slot(1, 1, 0) // adapter_version
	b.PrependInt32Slot(2, 1, 0) // model_version
	b.PrependUOffsetTSlot(3, vec, 0)
	b.FinishWithFileIdentifier(b.EndObject(), []byte(adapterIdentifier))
	out := b.FinishedBytes()
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error {
		_, err := w.Write(out)
		return err
	})
}

// adapterParam adds one Parameter table and returns its offset.
func adapterParam(b *flatbuffers.Builder, p AdapterParam) flatbuffers.UOffsetT {
	raw, dims := p.Raw, p.Dims
	nameOff := b.CreateString(p.Name)
	b.StartVector(8, len(dims), 8)
	for i := len(dims) - 1; i >= 0; i-- {
		b.PrependInt64(dims[i])
	}
	dimsOff := b.EndVector(len(dims))
	// raw_data has force_align 8 (ONNX Runtime maps tensors onto it in place).
	b.StartVector(1, len(raw), 8)
	for i := len(raw) - 1; i >= 0; i-- {
		b.PlaceByte(raw[i])
	}
	rawOff := b.EndVector(len(raw))
	b.StartObject(4)
	b.PrependUOffsetTSlot(0, nameOff, 0)
	b.PrependUOffsetTSlot(1, dimsOff, 0)
	b.PrependInt32Slot(2, p.DType, 0)
	b.PrependUOffsetTSlot(3, rawOff, 0)
	return b.EndObject()
}

// encodeFloats is v as little-endian float32 or float16 bytes.
func encodeFloats(v []float32, dt int32) []byte {
	if dt == ortgraph.Float16 {
		out := make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(out[2*i:], half.Float32ToFloat16(x))
		}
		return out
	}
	out := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
	}
	return out
}

// AdapterParam is one parameter of an .onnx_adapter file.
type AdapterParam struct {
	Name  string
	Dims  []int64
	DType int32 // ONNX TensorProto data type
	Raw   []byte
}

// maxAdapterFileBytes bounds an .onnx_adapter read whole (LoRA tensors of a large model
// at a high rank stay well below it).
const maxAdapterFileBytes = 4 << 30

// ReadAdapterFile reads an .onnx_adapter file's parameters. The flatbuffers Go runtime reads
// without bounds checks (there is no Go verifier), so sizes are checked here and a file
// that still sends a read out of range is reported as damaged instead of panicking.
func ReadAdapterFile(path string) (params []AdapterParam, err error) {
	buf, err := fsutil.ReadLimited(path, AdapterFile, maxAdapterFileBytes)
	if err != nil {
		return nil, err
	}
	if len(buf) < 8 || string(buf[4:8]) != adapterIdentifier {
		return nil, fmt.Errorf("%s: not an ONNX Runtime adapter file (no %q identifier)", path, adapterIdentifier)
	}
	defer func() {
		if r := recover(); r != nil {
			params, err = nil, fmt.Errorf("%s: damaged or truncated adapter file (an offset points outside its %d bytes): export it again", path, len(buf))
		}
	}()
	root := &flatbuffers.Table{Bytes: buf, Pos: flatbuffers.GetUOffsetT(buf)}
	if v := root.GetInt32Slot(4, 0); v != adapterFormatVersion {
		return nil, fmt.Errorf("%s: adapter format version %d, ortq reads %d", path, v, adapterFormatVersion)
	}
	o := flatbuffers.UOffsetT(root.Offset(10))
	if o == 0 {
		return nil, nil
	}
	vec, n := root.Vector(o), root.VectorLen(o)
	if n < 0 || n > len(buf)/4 {
		return nil, fmt.Errorf("%s: damaged adapter file (%d parameters in %d bytes)", path, n, len(buf))
	}
	for i := 0; i < n; i++ {
		p := &flatbuffers.Table{Bytes: buf, Pos: root.Indirect(vec + flatbuffers.UOffsetT(4*i))}
		var ap AdapterParam
		if f := flatbuffers.UOffsetT(p.Offset(4)); f != 0 {
			ap.Name = p.String(f + p.Pos)
		}
		if f := flatbuffers.UOffsetT(p.Offset(6)); f != 0 {
			dv, dn := p.Vector(f), p.VectorLen(f)
			if dn < 0 || dn > 8 {
				return nil, fmt.Errorf("%s: damaged adapter file (parameter %q has %d dims)", path, ap.Name, dn)
			}
			for k := 0; k < dn; k++ {
				ap.Dims = append(ap.Dims, p.GetInt64(dv+flatbuffers.UOffsetT(8*k)))
			}
		}
		ap.DType = p.GetInt32Slot(8, 0)
		if f := flatbuffers.UOffsetT(p.Offset(10)); f != 0 {
			ap.Raw = p.ByteVector(f + p.Pos)
		}
		if want := ortgraph.NumElements(ap.Dims) * int64(ortgraph.ElemSize(ap.DType)); want != int64(len(ap.Raw)) || ap.Name == "" {
			return nil, fmt.Errorf("%s: parameter %q: %d bytes for dims %v of type %d", path, ap.Name, len(ap.Raw), ap.Dims, ap.DType)
		}
		params = append(params, ap)
	}
	return params, nil
}
