package ortrun

import (
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// TestRunUndeclaredOutputType: an output whose element type the graph does not declare and
// that ONNX Runtime computes in a type onnxruntime_go or ortrun cannot return makes Run
// fail with an error naming that output, not panic; the session stays usable.
func TestRunUndeclaredOutputType(t *testing.T) {
	testLib(t)
	untyped := func(name string) *onnxpb.ValueInfoProto { return &onnxpb.ValueInfoProto{Name: name} }
	tests := []struct {
		name string
		to   DType // what the Cast computes
		out  *onnxpb.ValueInfoProto
		// goFails: onnxruntime_go itself cannot wrap the value (it copies one byte per
		// element of a type it has no Go type for), so every Run fails; otherwise only a
		// Run that asks for the output does.
		goFails bool
	}{
		{"float16", Float16, untyped("h"), true},
		{"bfloat16", DType(onnxpb.TensorProto_BFLOAT16), untyped("h"), true},
		{"int8", DType(onnxpb.TensorProto_INT8), untyped("h"), false},
		{"uint16", DType(onnxpb.TensorProto_UINT16), untyped("h"), false},
		{"string", DType(onnxpb.TensorProto_STRING), untyped("h"), false},
	}
	for _, tc := range tests {
		for _, order := range []string{"bad last", "bad first"} {
			t.Run(tc.name+"/"+order, func(t *testing.T) {
				m := newTiny().in("x", Float32, 3)
				good := valueInfo_("y", Float32, 3)
				if order == "bad last" {
					m.g.Output = append(m.g.Output, good, tc.out)
				} else {
					m.g.Output = append(m.g.Output, tc.out, good)
				}
				m.node("Cast", "cast", []string{"x"}, []string{"h"}, intAttr("to", int64(tc.to))).
					node("Neg", "neg", []string{"x"}, []string{"y"})
				s := mustSession(t, m.bytes(t), Options{})
				in := map[string]*Tensor{"x": f32([]int64{3}, 1, 2, 3)}
				for _, outs := range [][]string{nil, {"h"}, {"y"}} {
					res, err := s.Run(in, outs)
					if !tc.goFails && len(outs) == 1 && outs[0] == "y" {
						if err != nil {
							t.Fatalf("outputs %q: %v", outs, err)
						}
						if got := res["y"].Data.([]float32); got[0] != -1 || got[2] != -3 {
							t.Errorf("y = %v", got)
						}
						continue
					}
					if err == nil {
						t.Fatalf("outputs %q: no error (got %v)", outs, res)
					}
					t.Logf("outputs %q: %v", outs, err)
					if !strings.Contains(err.Error(), `output "h"`) {
						t.Errorf("outputs %q: error %q does not name output \"h\"", outs, err)
					}
				}
			})
		}
	}
}
