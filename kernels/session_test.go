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

// TestRMSNormGradSession runs RMSNormGrad through ONNX Runtime on the CPU and, where the CUDA
// provider and a GPU are there, on CUDA, over [2, 3, h] x for h of 3072 (the 3B shape), 5 and
// 1; dx must be the float64 reference within float16 rounding.
func TestRMSNormGradSession(t *testing.T) {
	ortruntest.Lib(t)
	rng := rand.New(rand.NewPCG(12, 13))
	for _, device := range []string{"cpu", "cuda:0"} {
		for _, h := range []int{3072, 5, 1} {
			x, w, r, dy := RMSNormInputs(rng, 6, h)
			shape := []int64{2, 3, int64(h)}
			in := map[string]*ortrun.Tensor{
				"x": {DType: ortrun.Float16, Shape: shape, Data: x}, "w": {DType: ortrun.Float16, Shape: []int64{int64(h)}, Data: w},
				"r": {DType: ortrun.Float32, Shape: []int64{2, 3, 1}, Data: r}, "dy": {DType: ortrun.Float16, Shape: shape, Data: dy},
			}
			out := run(t, device, rmsNormGradModel(t, int64(h)), in)
			if out == nil {
				t.Skipf("%s: no CUDA provider or GPU", device)
			}
			ref := RMSNormGradRef(x, w, r, dy)
			if i, ok := CloseTo(out["dx"].Data.([]uint16), ref, 1e-5); !ok {
				t.Fatalf("%s, h %d: element %d: dx %v, want %v", device, h, i, half.Float16ToFloat32(out["dx"].Data.([]uint16)[i]), ref[i])
			}
		}
	}
}

// rmsNormGradModel is one RMSNormGrad node over [2, 3, h] x and dy, [h] w and [2, 3, 1] r.
func rmsNormGradModel(t *testing.T, h int64) []byte {
	t.Helper()
	vi := func(n string, dt int32, dims ...int64) *onnxpb.ValueInfoProto {
		return &onnxpb.ValueInfoProto{Name: n, Type: ortgraph.TensorType(dt, dims)}
	}
	m := &onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}, {Domain: Domain, Version: 1}},
		Graph: &onnxpb.GraphProto{Name: RMSNormGrad,
			Node: []*onnxpb.NodeProto{{OpType: RMSNormGrad, Domain: Domain, Input: []string{"x", "w", "r", "dy"}, Output: []string{"dx"}}},
			Input: []*onnxpb.ValueInfoProto{vi("x", ortgraph.Float16, 2, 3, h), vi("w", ortgraph.Float16, h), vi("r", ortgraph.Float, 2, 3, 1),
				vi("dy", ortgraph.Float16, 2, 3, h)},
			Output: []*onnxpb.ValueInfoProto{vi("dx", ortgraph.Float16, 2, 3, h)}},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
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
