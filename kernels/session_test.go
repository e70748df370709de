package kernels_test

import (
	"math"
	"math/rand/v2"
	"os"
	"strings"
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
// provider and a GPU are there, on CUDA, over [2, 3, h] x for h of 3072 (the 3B shape: the
// 8-wide kernel), 5 and 1, without and with the residual gradient res; dx (+ res) must be the
// float64 reference within float16 rounding.
func TestRMSNormGradSession(t *testing.T) {
	ortruntest.Lib(t)
	rng := rand.New(rand.NewPCG(12, 13))
	for _, device := range []string{"cpu", "cuda:0"} {
		for _, c := range []struct {
			h   int
			res bool
		}{{3072, false}, {5, false}, {1, false}, {3072, true}, {5, true}} {
			x, w, r, dy := RMSNormInputs(rng, 6, c.h)
			shape := []int64{2, 3, int64(c.h)}
			in := map[string]*ortrun.Tensor{
				"x": {DType: ortrun.Float16, Shape: shape, Data: x}, "w": {DType: ortrun.Float16, Shape: []int64{int64(c.h)}, Data: w},
				"r": {DType: ortrun.Float32, Shape: []int64{2, 3, 1}, Data: r}, "dy": {DType: ortrun.Float16, Shape: shape, Data: dy},
			}
			res := []uint16(nil)
			if c.res {
				res = RandomHalves(rng, 6*c.h, 1)
				in["res"] = &ortrun.Tensor{DType: ortrun.Float16, Shape: shape, Data: res}
			}
			out := run(t, device, rmsNormGradModel(t, int64(c.h), c.res), in)
			if out == nil {
				t.Skipf("%s: no CUDA provider or GPU", device)
			}
			ref, mag := RMSNormGradRef(x, w, r, dy)
			for i := range res {
				v := float64(half.Float16ToFloat32(res[i]))
				ref[i] += v
				mag[i] += math.Abs(v)
			}
			if i, ok := CloseTo(out["dx"].Data.([]uint16), ref, mag, 1e-5); !ok {
				t.Fatalf("%s, h %d, res %v: element %d: dx %v, want %v", device, c.h, c.res, i,
					half.Float16ToFloat32(out["dx"].Data.([]uint16)[i]), ref[i])
			}
		}
	}
}

// TestRMSNormSession runs RMSNorm on the CPU and, where there is a GPU, on CUDA over [2, 3, h]
// x for h of 3072 (the 8-wide kernel) and 5, epsilon 1e-5 (the default) and 0.5: y and r must
// be the float64 reference within float16 rounding (y) and 1e-5 relative (r).
func TestRMSNormSession(t *testing.T) {
	ortruntest.Lib(t)
	rng := rand.New(rand.NewPCG(14, 15))
	for _, device := range []string{"cpu", "cuda:0"} {
		for _, c := range []struct {
			h   int64
			eps float32
		}{{3072, 0}, {5, 0.5}} {
			shape := []int64{2, 3, c.h}
			x, w := RandomHalves(rng, int(6*c.h), 2), RandomHalves(rng, int(c.h), 1)
			model := nodeModelAttrs(t, RMSNorm, []*onnxpb.ValueInfoProto{vi("x", ortgraph.Float16, shape...), vi("w", ortgraph.Float16, c.h)},
				[]*onnxpb.ValueInfoProto{vi("y", ortgraph.Float16, shape...), vi("r", ortgraph.Float, 2, 3, 1)}, c.eps)
			out := run(t, device, model, map[string]*ortrun.Tensor{"x": {DType: ortrun.Float16, Shape: shape, Data: x},
				"w": {DType: ortrun.Float16, Shape: []int64{c.h}, Data: w}})
			if out == nil {
				t.Skipf("%s: no CUDA provider or GPU", device)
			}
			eps := float64(c.eps)
			if eps == 0 {
				eps = 1e-5
			}
			y, r := RMSNormRef(x, w, eps)
			for i, v := range out["y"].Data.([]uint16) {
				if !CloseHalf(v, y[i]) {
					t.Fatalf("%s, h %d: y[%d] %v, want %v", device, c.h, i, half.Float16ToFloat32(v), y[i])
				}
			}
			for i, v := range out["r"].Data.([]float32) {
				if math.Abs(float64(v)-r[i]) > 1e-5*r[i] { // a float32 sum of h squares
					t.Fatalf("%s, h %d: r[%d] %v, want %v", device, c.h, i, v, r[i])
				}
			}
		}
	}
}

// rmsNormGradModel is one RMSNormGrad node over [2, 3, h] x and dy, [h] w and [2, 3, 1] r
// (and, with res, a residual gradient [2, 3, h]).
func rmsNormGradModel(t *testing.T, h int64, res bool) []byte {
	ins := []*onnxpb.ValueInfoProto{vi("x", ortgraph.Float16, 2, 3, h), vi("w", ortgraph.Float16, h),
		vi("r", ortgraph.Float, 2, 3, 1), vi("dy", ortgraph.Float16, 2, 3, h)}
	if res {
		ins = append(ins, vi("res", ortgraph.Float16, 2, 3, h))
	}
	return nodeModel(t, RMSNormGrad, ins, vi("dx", ortgraph.Float16, 2, 3, h))
}

func vi(n string, dt int32, dims ...int64) *onnxpb.ValueInfoProto {
	return &onnxpb.ValueInfoProto{Name: n, Type: ortgraph.TensorType(dt, dims)}
}

// nodeModel is one node of ortq's op reading ins and writing out.
func nodeModel(t *testing.T, op string, ins []*onnxpb.ValueInfoProto, out *onnxpb.ValueInfoProto) []byte {
	return nodeModelAttrs(t, op, ins, []*onnxpb.ValueInfoProto{out}, 0)
}

// nodeModelAttrs is one node of ortq's op reading ins and writing outs, with an epsilon
// attribute where eps is not 0.
func nodeModelAttrs(t *testing.T, op string, ins, outs []*onnxpb.ValueInfoProto, eps float32) []byte {
	t.Helper()
	var names, onames []string
	for _, in := range ins {
		names = append(names, in.Name)
	}
	for _, o := range outs {
		onames = append(onames, o.Name)
	}
	n := &onnxpb.NodeProto{OpType: op, Domain: Domain, Input: names, Output: onames}
	if eps != 0 {
		n.Attribute = append(n.Attribute, ortgraph.AFloat("epsilon", eps))
	}
	return graphModel(t, n, ins, outs)
}

// graphModel is a model of node n alone, reading ins and writing outs.
func graphModel(t *testing.T, n *onnxpb.NodeProto, ins, outs []*onnxpb.ValueInfoProto) []byte {
	t.Helper()
	m := &onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}, {Domain: Domain, Version: 1}},
		Graph:       &onnxpb.GraphProto{Name: n.OpType, Node: []*onnxpb.NodeProto{n}, Input: ins, Output: outs},
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

// runErr runs model's every output on device and returns the run's error.
func runErr(device string, model []byte, in map[string]*ortrun.Tensor) (map[string]*ortrun.Tensor, error) {
	s, err := ortrun.NewSessionFromBytes(model, ortrun.Options{Device: device})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Run(in, s.OutputNames())
}

// TestRotarySession runs Rotary on the CPU and, where there is a GPU, on CUDA, for x
// [batch, heads, seq, D] and [batch, seq, heads·D] with D = 16 (the 8-wide CUDA kernel) and
// D = 6 (one pair a thread): every y must be the float64 rotation within a unit in the last
// place. A position outside the caches is an error on the CPU and NaN on CUDA.
func TestRotarySession(t *testing.T) {
	ortruntest.Lib(t)
	rng := rand.New(rand.NewPCG(21, 22))
	const b, heads, seq, npos = 2, 3, 5, 9
	for _, device := range []string{"cpu", "cuda:0"} {
		for _, c := range []struct {
			d    int64
			bnsh bool
		}{{16, true}, {16, false}, {6, true}} {
			shape := []int64{b, heads, seq, c.d}
			if !c.bnsh {
				shape = []int64{b, seq, heads * c.d}
			}
			x, cs, sn := RandomHalves(rng, b*heads*seq*int(c.d), 2), RandomHalves(rng, npos*int(c.d)/2, 0.7), RandomHalves(rng, npos*int(c.d)/2, 0.7)
			pos := make([]int64, b*seq)
			for i := range pos {
				pos[i] = rng.Int64N(npos)
			}
			model := nodeModel(t, Rotary, []*onnxpb.ValueInfoProto{vi("x", ortgraph.Float16, shape...), vi("cos", ortgraph.Float16, npos, c.d/2),
				vi("sin", ortgraph.Float16, npos, c.d/2), vi("pos", ortgraph.Int64, b, seq)}, vi("y", ortgraph.Float16, shape...))
			in := map[string]*ortrun.Tensor{"x": {DType: ortrun.Float16, Shape: shape, Data: x},
				"cos": {DType: ortrun.Float16, Shape: []int64{npos, c.d / 2}, Data: cs}, "sin": {DType: ortrun.Float16, Shape: []int64{npos, c.d / 2}, Data: sn},
				"pos": {DType: ortrun.Int64, Shape: []int64{b, seq}, Data: pos}}
			out := run(t, device, model, in)
			if out == nil {
				t.Skipf("%s: no CUDA provider or GPU", device)
			}
			ref := RotaryRef(x, cs, sn, pos, heads, seq, int(c.d), c.bnsh)
			for i, v := range out["y"].Data.([]uint16) {
				if !CloseHalf(v, ref[i]) {
					t.Fatalf("%s %v: element %d: y %v, want %v", device, shape, i, half.Float16ToFloat32(v), ref[i])
				}
			}
			pos[3] = npos
			if device == "cpu" {
				if _, err := runErr(device, model, in); err == nil || !strings.Contains(err.Error(), "outside the cos/sin caches") {
					t.Errorf("cpu: position %d of %d: error %v, want one naming the caches", npos, npos, err)
				}
			} else if y := run(t, device, model, in)["y"].Data.([]uint16); !math.IsNaN(float64(half.Float16ToFloat32(y[RotaryRowOf(3, heads, seq, c.bnsh)*int(c.d)]))) {
				t.Errorf("%s: a position outside the caches did not write NaN", device)
			}
		}
	}
}

// TestMaskedSoftmaxSession runs MaskedSoftmax on the CPU and, where there is a GPU, on CUDA:
// s [2, 3, 4, L] for L = 512 (the 8-wide kernel) and 13, masks broadcast over heads
// ([2, 1, 4, L]: a causal mask of −65504) or over batch and queries ([1, 3, 1, L]); every p
// must be the float64 softmax within a unit in the last place.
func TestMaskedSoftmaxSession(t *testing.T) {
	ortruntest.Lib(t)
	rng := rand.New(rand.NewPCG(23, 24))
	for _, device := range []string{"cpu", "cuda:0"} {
		for _, c := range []struct{ l, mb, mh, mq int64 }{{512, 2, 1, 4}, {13, 2, 1, 4}, {512, 1, 3, 1}, {13, 1, 3, 1}} {
			shape, mshape := []int64{2, 3, 4, c.l}, []int64{c.mb, c.mh, c.mq, c.l}
			s, m := RandomHalves(rng, int(ortgraph.NumElements(shape)), 3), RandomHalves(rng, int(ortgraph.NumElements(mshape)), 1)
			if c.mq > 1 { // causal: query i sees keys ≤ i + L − q
				for i := range m {
					if q, k := int64(i)/c.l%c.mq, int64(i)%c.l; k > q+c.l-c.mq {
						m[i] = half.Float32ToFloat16(-65504)
					}
				}
			}
			model := nodeModel(t, MaskedSoftmax, []*onnxpb.ValueInfoProto{vi("s", ortgraph.Float16, shape...), vi("m", ortgraph.Float16, mshape...)},
				vi("p", ortgraph.Float16, shape...))
			out := run(t, device, model, map[string]*ortrun.Tensor{"s": {DType: ortrun.Float16, Shape: shape, Data: s},
				"m": {DType: ortrun.Float16, Shape: mshape, Data: m}})
			if out == nil {
				t.Skipf("%s: no CUDA provider or GPU", device)
			}
			ref := MaskedSoftmaxRef(s, m, shape, mshape)
			for i, v := range out["p"].Data.([]uint16) {
				if !CloseHalf(v, ref[i]) {
					t.Fatalf("%s s %v m %v: element %d: p %v, want %v", device, shape, mshape, i, half.Float16ToFloat32(v), ref[i])
				}
			}
		}
	}
}

// TestDequantBnb4Session runs DequantBnb4 on the CPU and, where there is a GPU, on CUDA for W
// [8, 64] in blocks of 64 (the 4-byte CUDA kernel) and [3, 6] in blocks of 6 (a byte a
// thread): every element must be the float64 product lut[byte][i]·absmax within a unit in
// the last place.
func TestDequantBnb4Session(t *testing.T) {
	ortruntest.Lib(t)
	rng := rand.New(rand.NewPCG(25, 26))
	for _, device := range []string{"cpu", "cuda:0"} {
		for _, c := range []struct{ n, k, bs int64 }{{8, 64, 64}, {3, 6, 6}} {
			m, blocks := c.n*c.k/2, c.n*c.k/c.bs
			bytes := make([]uint8, m)
			for i := range bytes {
				bytes[i] = uint8(rng.IntN(256))
			}
			lut, absmax := RandomHalves(rng, 512, 1), RandomHalves(rng, int(blocks), 0.1)
			n := &onnxpb.NodeProto{OpType: DequantBnb4, Domain: Domain, Input: []string{"b", "lut", "absmax"}, Output: []string{"w"},
				Attribute: []*onnxpb.AttributeProto{ortgraph.AInt("N", c.n), ortgraph.AInt("K", c.k)}}
			model := graphModel(t, n, []*onnxpb.ValueInfoProto{vi("b", ortgraph.Uint8, m), vi("lut", ortgraph.Float16, 256, 2),
				vi("absmax", ortgraph.Float16, blocks)}, []*onnxpb.ValueInfoProto{vi("w", ortgraph.Float16, c.n, c.k)})
			out := run(t, device, model, map[string]*ortrun.Tensor{"b": {DType: ortrun.Uint8, Shape: []int64{m}, Data: bytes},
				"lut": {DType: ortrun.Float16, Shape: []int64{256, 2}, Data: lut}, "absmax": {DType: ortrun.Float16, Shape: []int64{blocks}, Data: absmax}})
			if out == nil {
				t.Skipf("%s: no CUDA provider or GPU", device)
			}
			f := func(v uint16) float64 { return float64(half.Float16ToFloat32(v)) }
			for e, v := range out["w"].Data.([]uint16) {
				if want := f(lut[2*int(bytes[e/2])+e%2]) * f(absmax[int64(e)/c.bs]); !CloseHalf(v, want) {
					t.Fatalf("%s W [%d, %d]: element %d: %v, want %v", device, c.n, c.k, e, f(v), want)
				}
			}
		}
	}
}
