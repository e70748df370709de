package passes

import (
	"math"
	"strconv"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"google.golang.org/protobuf/proto"
)

// TestDropoutHashMatchesReference: the masks ONNX Runtime computes from the emitted graph
// equal DropoutKeepRef element for element, for two modules sharing an input and one of
// another width, at several seeds — so the graph's int64 arithmetic never overflows and
// the hash is what the statistics below measure.
func TestDropoutHashMatchesReference(t *testing.T) {
	ortrun.TestLib(t)
	const rows, seq, wide, narrow, p = 3, 37, 96, 40, 0.1
	m := &onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 18}},
		Graph:       &onnxpb.GraphProto{Name: "dropout"},
	}
	g := ortgraph.NewGraph(&ortgraph.Model{P: m, Dir: "."})
	for _, in := range []struct {
		name string
		w    int64
	}{{"x", wide}, {"y", narrow}} {
		m.Graph.Input = append(m.Graph.Input, &onnxpb.ValueInfoProto{Name: in.name, Type: ortgraph.SymTensorType(ortgraph.Float16, []string{"b", "s", itoa(in.w)})})
	}
	g.Reindex()
	h := newDropoutHash(g)
	var outs []string
	for i, c := range []struct {
		x  string
		in int64
	}{{"x", wide}, {"x", wide}, {"y", narrow}} {
		keep, err := h.keep(c.x, c.in, i, p)
		if err != nil {
			t.Fatal(err)
		}
		out := g.Op("Cast", []string{keep}, ortgraph.AInt("to", int64(ortgraph.Int64)))
		m.Graph.Output = append(m.Graph.Output, &onnxpb.ValueInfoProto{Name: out, Type: ortgraph.SymTensorType(ortgraph.Int64, []string{"b", "s", "w" + itoa(int64(i))})})
		outs = append(outs, out)
	}
	buf, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ortrun.NewSessionFromBytes(buf, ortrun.Options{Device: "cpu", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, seed := range []int64{0, 1, 12345, DropoutPrime - 1} {
		in := map[string]*ortrun.Tensor{
			"x":              {DType: ortrun.Float16, Shape: []int64{rows, seq, wide}, Data: make([]uint16, rows*seq*wide)},
			"y":              {DType: ortrun.Float16, Shape: []int64{rows, seq, narrow}, Data: make([]uint16, rows*seq*narrow)},
			DropoutSeedInput: {DType: ortrun.Int64, Shape: []int64{1}, Data: []int64{seed}},
		}
		got, err := s.Run(in, outs)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range []int64{wide, wide, narrow} {
			v := got[outs[i]].Data.([]int64)
			bad := 0
			for j, k := range v {
				want := DropoutKeepRef(seed, i, int64(j)/w, int64(j)%w, p)
				if (k == 1) != want {
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("seed %d module %d: %d of %d mask elements differ from DropoutKeepRef", seed, i, bad, len(v))
			}
		}
	}
}

// TestDropoutHashStatistics measures the reference hash over a Llama-3B-sized input row
// block: the kept fraction is 1−p, and the masks of neighbouring rows, neighbouring
// columns, two modules and two seeds agree as often as independent Bernoulli(1−p) draws
// would (q² + (1−q)²).
func TestDropoutHashStatistics(t *testing.T) {
	const rows, cols, p = 512, 3072, 0.1
	indep := p*p + (1-p)*(1-p)
	n := float64(rows * cols)
	// Four standard deviations of a mean of n Bernoulli draws: the bound is loose enough
	// for a fixed seed never to flake, tight enough to catch a biased or correlated hash.
	tol := 4 * math.Sqrt(0.25/n)
	for _, seed := range []int64{7, 123456789} {
		kept, sameRow, sameCol, sameMod, sameSeed := 0.0, 0.0, 0.0, 0.0, 0.0
		for r := int64(0); r < rows; r++ {
			for c := int64(0); c < cols; c++ {
				k := DropoutKeepRef(seed, 0, r, c, p)
				eq := func(o bool) float64 {
					if o == k {
						return 1
					}
					return 0
				}
				if k {
					kept++
				}
				sameRow += eq(DropoutKeepRef(seed, 0, r+1, c, p))
				sameCol += eq(DropoutKeepRef(seed, 0, r, c+1, p))
				sameMod += eq(DropoutKeepRef(seed, 1, r, c, p))
				sameSeed += eq(DropoutKeepRef(seed+1, 0, r, c, p))
			}
		}
		for _, c := range []struct {
			what      string
			got, want float64
		}{
			{"kept fraction", kept / n, 1 - p},
			{"agreement with the next row", sameRow / n, indep},
			{"agreement with the next column", sameCol / n, indep},
			{"agreement with the next module", sameMod / n, indep},
			{"agreement with the next seed", sameSeed / n, indep},
		} {
			t.Logf("seed %d: %s %.5f (independent draws: %.5f, bound ±%.5f)", seed, c.what, c.got, c.want, tol)
			if math.Abs(c.got-c.want) > tol {
				t.Errorf("seed %d: %s is %.5f, want %.5f ± %.5f", seed, c.what, c.got, c.want, tol)
			}
		}
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
