package ortrun

import (
	"fmt"
	"os"
	"syscall"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// valueInfo is what a session needs to know about one graph input or output.
type valueInfo struct {
	name  string
	dtype DType
	// dims: one entry per axis; a dim_value, or -1 when the axis is symbolic or unknown.
	// nil when the rank is unknown (no shape in the ValueInfoProto).
	dims []int64
	// params[i] is the dim_param of axis i ("" when it has a value or no name).
	params []string
}

func (v valueInfo) rankKnown() bool { return v.dims != nil }

// graphIO lists the graph's inputs (initializers excluded, as ONNX Runtime's
// SessionGetInputName does) and outputs.
//
// Why not onnxruntime_go's GetInputOutputInfo: it builds a whole temporary CPU session, which
// for a multi-GB model means loading and optimizing it twice. Why not proto.Unmarshal of the
// whole ModelProto: it copies every initializer. So this walks the wire format with protowire,
// decoding only GraphProto.input/output (and initializer names), and skips the weight bytes.
func graphIO(model []byte) (inputs, outputs []valueInfo, err error) {
	graph, err := findField(model, 7) // ModelProto.graph
	if err != nil {
		return nil, nil, err
	}
	if graph == nil {
		return nil, nil, fmt.Errorf("not an ONNX model: no ModelProto.graph")
	}
	inits := map[string]bool{}
	var rawIn, rawOut [][]byte
	err = eachField(graph, func(num protowire.Number, typ protowire.Type, b []byte) error {
		switch num {
		case 5: // GraphProto.initializer (TensorProto; name is field 8)
			name, err := stringField(b, 8)
			inits[name] = true
			return err
		case 15: // GraphProto.sparse_initializer (SparseTensorProto.values is field 1)
			values, err := findField(b, 1)
			if err != nil || values == nil {
				return err
			}
			name, err := stringField(values, 8)
			inits[name] = true
			return err
		case 11:
			rawIn = append(rawIn, b)
		case 12:
			rawOut = append(rawOut, b)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	decode := func(raw [][]byte, skipInits bool) ([]valueInfo, error) {
		var out []valueInfo
		for _, b := range raw {
			var vi onnxpb.ValueInfoProto
			if err := proto.Unmarshal(b, &vi); err != nil {
				return nil, fmt.Errorf("decoding a graph input/output: %w", err)
			}
			if skipInits && inits[vi.GetName()] {
				continue
			}
			out = append(out, valueInfoOf(&vi))
		}
		return out, nil
	}
	if inputs, err = decode(rawIn, true); err != nil {
		return nil, nil, err
	}
	if outputs, err = decode(rawOut, false); err != nil {
		return nil, nil, err
	}
	return inputs, outputs, nil
}

func valueInfoOf(vi *onnxpb.ValueInfoProto) valueInfo {
	v := valueInfo{name: vi.GetName()}
	tt := vi.GetType().GetTensorType()
	if tt == nil {
		return v
	}
	v.dtype = DType(tt.GetElemType())
	if tt.GetShape() == nil {
		return v
	}
	dims := tt.GetShape().GetDim()
	v.dims = make([]int64, len(dims))
	v.params = make([]string, len(dims))
	for i, d := range dims {
		v.dims[i] = -1
		if x, ok := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); ok {
			v.dims[i] = x.DimValue
		}
		v.params[i] = d.GetDimParam()
	}
	return v
}

// eachField calls fn for every length-delimited field of msg (the only kind this file needs),
// skipping the others.
func eachField(msg []byte, fn func(protowire.Number, protowire.Type, []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return fmt.Errorf("not an ONNX model (bad protobuf tag): %w", protowire.ParseError(n))
		}
		msg = msg[n:]
		if typ == protowire.BytesType {
			b, m := protowire.ConsumeBytes(msg)
			if m < 0 {
				return fmt.Errorf("not an ONNX model (truncated field %d): %w", num, protowire.ParseError(m))
			}
			if err := fn(num, typ, b); err != nil {
				return err
			}
			msg = msg[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, msg)
		if m < 0 {
			return fmt.Errorf("not an ONNX model (bad field %d): %w", num, protowire.ParseError(m))
		}
		msg = msg[m:]
	}
	return nil
}

// findField returns the last occurrence of length-delimited field num (protobuf's rule for
// singular fields), or nil.
func findField(msg []byte, num protowire.Number) ([]byte, error) {
	var found []byte
	err := eachField(msg, func(n protowire.Number, _ protowire.Type, b []byte) error {
		if n == num {
			found = b
		}
		return nil
	})
	return found, err
}

func stringField(msg []byte, num protowire.Number) (string, error) {
	b, err := findField(msg, num)
	return string(b), err
}

// mapFile maps a model file read-only, so that graphIO touches only the pages it decodes.
// The returned func unmaps it.
func mapFile(path string) ([]byte, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		return nil, nil, fmt.Errorf("%q is a directory, not an .onnx file", path)
	}
	if st.Size() == 0 {
		return nil, nil, fmt.Errorf("%q is empty, not an ONNX model", path)
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		// Some filesystems cannot map; read it instead.
		b, err := os.ReadFile(path)
		return b, func() {}, err
	}
	return b, func() { _ = syscall.Munmap(b) }, nil
}
