package quantize

import (
	"fmt"
	"github.com/ortq/ortq/internal/half"
	"math"
	"testing"

	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestAgainstORT runs ONNX Runtime's own dequantization of Packed bytes — MatMulNBits with an
// identity A, and DequantizeLinear-21 on the same bytes as UINT4 — and requires both to equal
// Dequantize exactly, in fp32 and (against DequantizeWith FP16Values) in fp16. DequantizeLinear
// must match bit for bit; MatMulNBits up to the sign of zero, because its output is a sum
// A·Bᵀ (+0 where a negative symmetric scale makes the weight −0).
func TestAgainstORT(t *testing.T) {
	ortruntest.Lib(t)
	for _, fp16 := range []bool{false, true} {
		for _, c := range ortCases {
			t.Run(fmt.Sprintf("%s/fp16=%v", c.name, fp16), func(t *testing.T) {
				p := mustQuantize(t, ortWeights(c), c.n, c.k, c.opt)
				sess, err := ortrun.NewSessionFromBytes(dequantModel(p, fp16), ortrun.Options{Device: "cpu"})
				if err != nil {
					t.Fatal(err)
				}
				defer sess.Close()

				a := &ortrun.Tensor{DType: ortrun.Float32, Shape: []int64{int64(c.k), int64(c.k)}, Data: identity(c.k)}
				s := &ortrun.Tensor{DType: ortrun.Float32, Shape: []int64{int64(c.n), int64(p.Blocks)}, Data: p.Scales}
				want := p.Dequantize()
				if fp16 {
					id := identity(c.k)
					h := make([]uint16, len(id))
					for i, v := range id {
						h[i] = half.Float32ToFloat16(v)
					}
					a = &ortrun.Tensor{DType: ortrun.Float16, Shape: a.Shape, Data: h}
					s = &ortrun.Tensor{DType: ortrun.Float16, Shape: s.Shape, Data: p.ScalesFP16()}
					want = p.DequantizeWith(DequantizeOptions{FP16Values: true})
				}
				out, err := sess.Run(map[string]*ortrun.Tensor{"A": a, "dq_scales": s}, []string{"Y_mnb", "Y_dq"})
				if err != nil {
					t.Fatal(err)
				}
				ymnb, ydq := floats(t, out["Y_mnb"]), floats(t, out["Y_dq"])

				kp := p.Blocks * p.BlockSize
				bad := 0
				for r := range c.n {
					for col := range c.k {
						w := want[r*c.k+col]
						if m := ymnb[col*c.n+r]; m != w {
							bad++
							if bad <= 5 {
								t.Errorf("MatMulNBits W[%d,%d] = %g, Dequantize %g", r, col, m, w)
							}
						}
						if d := ydq[r*kp+col]; math.Float32bits(d) != math.Float32bits(w) {
							bad++
							if bad <= 5 {
								t.Errorf("DequantizeLinear W[%d,%d] = %g (%#08x), Dequantize %g (%#08x)",
									r, col, d, math.Float32bits(d), w, math.Float32bits(w))
							}
						}
					}
					for col := c.k; col < kp; col++ { // padding codes must dequantize to 0
						if d := ydq[r*kp+col]; d != 0 {
							t.Errorf("DequantizeLinear padding W[%d,%d] = %g, want 0", r, col, d)
						}
					}
				}
				if bad > 0 {
					t.Errorf("%d mismatches", bad)
				}
			})
		}
	}
}

// floats returns an fp32 or fp16 output as float32 values.
func floats(t *testing.T, x *ortrun.Tensor) []float32 {
	t.Helper()
	switch d := x.Data.(type) {
	case []float32:
		return d
	case []uint16:
		f := make([]float32, len(d))
		for i, h := range d {
			f[i] = half.Float16ToFloat32(h)
		}
		return f
	}
	t.Fatalf("output of type %s (%T)", x.DType, x.Data)
	return nil
}
