package autodiff

import (
	"fmt"
	"math"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/quantize"
	"google.golang.org/protobuf/proto"
)

// TestBnb4AgainstORT builds, for NF4 and FP4 with and without double quantization, a graph
// with ONNX Runtime's MatMulBnb4 (as RewriteAsBnb4 writes it) and the in-graph dequantization
// of the same bytes (Bnb4Weight), and runs it on the CPU execution provider: the in-graph W
// must equal the Go reference quantize.Bnb4.Dequantize bit for bit, MatMulBnb4 with an
// identity A must give Wᵀ exactly, and with a random A it must equal A·Wᵀ from the reference
// W within float32 summation error.
func TestBnb4AgainstORT(t *testing.T) {
	ortruntest.Lib(t)
	const n, k = 24, 64
	w := make([]float32, n*k)
	for i := range w {
		w[i] = float32(math.Sin(float64(i)*0.37)*0.05) * float32(1+i%7)
	}
	for _, typ := range []quantize.Type{quantize.NF4, quantize.FP4} {
		for _, dq := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/double=%v", typ, dq), func(t *testing.T) {
				p, err := quantize.QuantizeBnb4(w, n, k, quantize.Options{Type: typ, BlockSize: 32, DoubleQuant: dq})
				if err != nil {
					t.Fatal(err)
				}
				sess, err := ortrun.NewSessionFromBytes(bnb4Model(t, p), ortrun.Options{Device: "cpu"})
				if err != nil {
					t.Fatal(err)
				}
				defer sess.Close()
				want := p.Dequantize()
				id := make([]float32, k*k)
				for i := range k {
					id[i*k+i] = 1
				}
				out, err := sess.Run(map[string]*ortrun.Tensor{"a": {DType: ortrun.Float32, Shape: []int64{k, k}, Data: id}}, []string{"y", "w"})
				if err != nil {
					t.Fatal(err)
				}
				y, wg := out["y"].Data.([]float32), out["w"].Data.([]float32)
				for r := range n {
					for c := range k {
						ref := want[r*k+c]
						if math.Float32bits(wg[r*k+c]) != math.Float32bits(ref) {
							t.Fatalf("in-graph W[%d,%d] = %v, reference %v", r, c, wg[r*k+c], ref)
						}
						if y[c*n+r] != ref {
							t.Fatalf("MatMulBnb4 with A = I: W[%d,%d] = %v, reference %v", r, c, y[c*n+r], ref)
						}
					}
				}
				checkBnb4Product(t, sess, want, n, k)
			})
		}
	}
}

// checkBnb4Product runs MatMulBnb4 on a random [3, k] A against the reference product.
func checkBnb4Product(t *testing.T, sess *ortrun.Session, w []float32, n, k int) {
	t.Helper()
	a := make([]float32, 3*k)
	for i := range a {
		a[i] = float32(math.Cos(float64(i) * 1.3))
	}
	out, err := sess.Run(map[string]*ortrun.Tensor{"a": {DType: ortrun.Float32, Shape: []int64{3, int64(k)}, Data: a}}, []string{"y"})
	if err != nil {
		t.Fatal(err)
	}
	y := out["y"].Data.([]float32)
	for i := range 3 {
		for r := range n {
			var s, mag float64
			for c := range k {
				s += float64(a[i*k+c]) * float64(w[r*k+c])
				mag += math.Abs(float64(a[i*k+c]) * float64(w[r*k+c]))
			}
			if d := math.Abs(float64(y[i*n+r]) - s); d > 1e-6*mag+1e-7 {
				t.Fatalf("MatMulBnb4 y[%d,%d] = %v, reference %v", i, r, y[i*n+r], s)
			}
		}
	}
}

// bnb4Model is a graph with input a [M, K] and outputs y = MatMulBnb4(a, W) and w =
// Bnb4Weight (gated on a); Bnb4WeightBytes finds w's bytes (and none for y).
func bnb4Model(t *testing.T, p *quantize.Bnb4) []byte {
	t.Helper()
	m := newModel(21)
	g := ortgraph.NewGraph(m)
	m.P.Graph.Input = append(m.P.Graph.Input, &onnxpb.ValueInfoProto{Name: "a", Type: ortgraph.TensorType(ortgraph.Float, []int64{-1, int64(p.K)})})
	g.Reindex()
	y := g.Op("MatMul", []string{"a", "placeholder"})
	node := g.Producer(y)
	RewriteAsBnb4(g, node, "a", p, "w", ortgraph.Float)
	wv, err := Bnb4Weight(g, node, Bnb4Gate(g, "a"), ortgraph.Float)
	if err != nil {
		t.Fatal(err)
	}
	if got := Bnb4WeightBytes(g, wv); got != node.Input[1] {
		t.Errorf("Bnb4WeightBytes of Bnb4Weight's output = %q, want its bytes %q", got, node.Input[1])
	}
	if got := Bnb4WeightBytes(g, y); got != "" {
		t.Errorf("Bnb4WeightBytes of the product = %q, want none", got)
	}
	for _, o := range []struct {
		v, name string
		dims    []int64
	}{{y, "y", []int64{-1, int64(p.N)}}, {wv, "w", []int64{int64(p.N), int64(p.K)}}} {
		g.Op("Identity", []string{o.v})
		m.P.Graph.Node[len(m.P.Graph.Node)-1].Output[0] = o.name
		m.P.Graph.Output = append(m.P.Graph.Output, &onnxpb.ValueInfoProto{Name: o.name, Type: ortgraph.TensorType(ortgraph.Float, o.dims)})
	}
	if err := g.TopoSort(); err != nil {
		t.Fatal(err)
	}
	buf, err := proto.Marshal(m.P)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}
