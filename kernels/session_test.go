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

// swigluGradModel is one SwiGLUGrad node over [rows, cols] float16 inputs.
func swigluGradModel(t *testing.T, rows, cols int64) []byte {
	t.Helper()
	ty := ortgraph.TensorType(ortgraph.Float16, []int64{rows, cols})
	vi := func(n string) *onnxpb.ValueInfoProto { return &onnxpb.ValueInfoProto{Name: n, Type: ty} }
	m := &onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}, {Domain: Domain, Version: 1}},
		Graph: &onnxpb.GraphProto{
			Name:   "swiglu_grad",
			Node:   []*onnxpb.NodeProto{{OpType: SwiGLUGrad, Domain: Domain, Input: []string{"g", "u", "dh"}, Output: []string{"dg", "du"}}},
			Input:  []*onnxpb.ValueInfoProto{vi("g"), vi("u"), vi("dh")},
			Output: []*onnxpb.ValueInfoProto{vi("dg"), vi("du")},
		},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSwiGLUGradSession runs the op through ONNX Runtime on the CPU and, where the CUDA
// provider and a GPU are there, on CUDA (the 8-wide kernel for [4, 64], the one-element
// kernel for [3, 67]); every result must be the float64 reference within a unit in the
// last place.
func TestSwiGLUGradSession(t *testing.T) {
	ortruntest.Lib(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, device := range []string{"cpu", "cuda:0"} {
		for _, shape := range [][2]int64{{4, 64}, {3, 67}} {
			s, err := ortrun.NewSessionFromBytes(swigluGradModel(t, shape[0], shape[1]), ortrun.Options{Device: device})
			if err != nil {
				if device != "cpu" && os.Getenv("ORTQ_REQUIRE_CUDA") != "1" {
					t.Skipf("%s: %v", device, err)
				}
				t.Fatalf("%s: %v", device, err)
			}
			n := int(shape[0] * shape[1])
			in := map[string]*ortrun.Tensor{}
			for _, name := range []string{"g", "u", "dh"} {
				in[name] = &ortrun.Tensor{DType: ortrun.Float16, Shape: shape[:], Data: RandomHalves(rng, n, 3)}
			}
			out, err := s.Run(in, []string{"dg", "du"})
			s.Close()
			if err != nil {
				t.Fatalf("%s %v: %v", device, shape, err)
			}
			g, u, dh := in["g"].Data.([]uint16), in["u"].Data.([]uint16), in["dh"].Data.([]uint16)
			dg, du := out["dg"].Data.([]uint16), out["du"].Data.([]uint16)
			for i := range n {
				rdg, rdu := SwiGLUGradRef(g[i], u[i], dh[i])
				if !CloseHalf(dg[i], rdg) || !CloseHalf(du[i], rdu) {
					t.Fatalf("%s %v element %d: dg %v du %v, want %v %v", device, shape, i,
						half.Float16ToFloat32(dg[i]), half.Float16ToFloat32(du[i]), rdg, rdu)
				}
			}
		}
	}
}
