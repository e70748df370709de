package kernels_test

import (
	"math/rand/v2"
	"os"
	"testing"

	"github.com/ortq/ortq/internal/half"
	. "github.com/ortq/ortq/kernels"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"google.golang.org/protobuf/proto"
)

// opModel is one node of op over [rows, cols] float16 inputs ins, writing outs.
func opModel(t *testing.T, op string, ins, outs []string, rows, cols int64) []byte {
	t.Helper()
	ty := ortgraph.TensorType(ortgraph.Float16, []int64{rows, cols})
	var in, out []*onnxpb.ValueInfoProto
	for _, n := range ins {
		in = append(in, &onnxpb.ValueInfoProto{Name: n, Type: ty})
	}
	for _, n := range outs {
		out = append(out, &onnxpb.ValueInfoProto{Name: n, Type: ty})
	}
	m := &onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}, {Domain: Domain, Version: 1}},
		Graph: &onnxpb.GraphProto{Name: op, Node: []*onnxpb.NodeProto{{OpType: op, Domain: Domain, Input: ins, Output: outs}},
			Input: in, Output: out},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSessions runs SwiGLU and SwiGLUGrad through ONNX Runtime on the CPU and, where the
// CUDA provider and a GPU are there, on CUDA (the 8-wide kernels for [4, 64], the
// one-element ones for [3, 67]); every result must be the float64 reference within a unit in
// the last place.
func TestSessions(t *testing.T) {
	ortruntest.Lib(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, device := range []string{"cpu", "cuda:0"} {
		for _, shape := range [][2]int64{{4, 64}, {3, 67}} {
			n := int(shape[0] * shape[1])
			in := map[string]*ortrun.Tensor{}
			for _, name := range []string{"g", "u", "dh"} {
				in[name] = &ortrun.Tensor{DType: ortrun.Float16, Shape: shape[:], Data: RandomHalves(rng, n, 3)}
			}
			g, u, dh := in["g"].Data.([]uint16), in["u"].Data.([]uint16), in["dh"].Data.([]uint16)
			grad := run(t, device, opModel(t, SwiGLUGrad, []string{"g", "u", "dh"}, []string{"dg", "du"}, shape[0], shape[1]), in)
			fwd := run(t, device, opModel(t, SwiGLU, []string{"g", "u"}, []string{"h"}, shape[0], shape[1]), map[string]*ortrun.Tensor{"g": in["g"], "u": in["u"]})
			if grad == nil || fwd == nil {
				t.Skipf("%s: no CUDA provider or GPU", device)
			}
			dg, du, h := grad["dg"].Data.([]uint16), grad["du"].Data.([]uint16), fwd["h"].Data.([]uint16)
			for i := range n {
				rdg, rdu := SwiGLUGradRef(g[i], u[i], dh[i])
				rh := SwiGLURef(g[i], u[i])
				if !CloseHalf(dg[i], rdg) || !CloseHalf(du[i], rdu) || !CloseHalf(h[i], rh) {
					t.Fatalf("%s %v element %d: h %v dg %v du %v, want %v %v %v", device, shape, i, half.Float16ToFloat32(h[i]),
						half.Float16ToFloat32(dg[i]), half.Float16ToFloat32(du[i]), rh, rdg, rdu)
				}
			}
		}
	}
}

// run runs model's every output on device; nil where a CUDA session cannot be made and
// ORTQ_REQUIRE_CUDA is not 1.
func run(t *testing.T, device string, model []byte, in map[string]*ortrun.Tensor) map[string]*ortrun.Tensor {
	t.Helper()
	s, err := ortrun.NewSessionFromBytes(model, ortrun.Options{Device: device})
	if err != nil {
		if device != "cpu" && os.Getenv("ORTQ_REQUIRE_CUDA") != "1" {
			t.Logf("%s: %v", device, err)
			return nil
		}
		t.Fatalf("%s: %v", device, err)
	}
	defer s.Close()
	out, err := s.Run(in, s.OutputNames())
	if err != nil {
		t.Fatalf("%s: %v", device, err)
	}
	return out
}
