package passes

import (
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"google.golang.org/protobuf/proto"
)

// TestGatherND2D: ORTCompat's rewrite of GatherND over a rank-2 tensor by index pairs gives
// ONNX Runtime's GatherND result element for element, for float and bool data, with negative
// indices, and leaves GatherND of other ranks alone.
func TestGatherND2D(t *testing.T) {
	ortruntest.Lib(t)
	const B, S = 3, 5
	var idx []int64 // [B, 1, 1, S, 2]: (b, k), with the last pair of each row negative
	for b := 0; b < B; b++ {
		for k := 0; k < S; k++ {
			i, j := int64(b), int64(k)
			if k == S-1 {
				i, j = int64(b-B), -1
			}
			idx = append(idx, i, j)
		}
	}
	for _, dt := range []int32{ortgraph.Float, ortgraph.Bool} {
		build := func() *ortgraph.Graph {
			m := &ortgraph.Model{P: &onnxpb.ModelProto{IrVersion: 10, OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 21}},
				Graph: &onnxpb.GraphProto{Name: "gnd"}}}
			g := ortgraph.NewGraph(m)
			g.P.Input = []*onnxpb.ValueInfoProto{{Name: "x", Type: ortgraph.TensorType(dt, []int64{B, S})}}
			g.P.Initializer = append(g.P.Initializer, ortgraph.Int64Tensor("idx", []int64{B, 1, 1, S, 2}, idx))
			g.P.Node = []*onnxpb.NodeProto{{OpType: "GatherND", Name: "gnd", Input: []string{"x", "idx"}, Output: []string{"y"}}}
			g.P.Output = []*onnxpb.ValueInfoProto{{Name: "y", Type: ortgraph.TensorType(dt, []int64{B, 1, 1, S})}}
			g.Reindex()
			return g
		}
		run := func(g *ortgraph.Graph, x *ortrun.Tensor) *ortrun.Tensor {
			b, err := proto.Marshal(g.M.P)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ortrun.NewSessionFromBytes(b, ortrun.Options{IntraOpThreads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			out, err := s.Run(map[string]*ortrun.Tensor{"x": x}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return out["y"]
		}
		x := &ortrun.Tensor{DType: ortrun.DType(dt), Shape: []int64{B, S}}
		if dt == ortgraph.Float {
			v := make([]float32, B*S)
			for i := range v {
				v[i] = float32(i) + 0.5
			}
			x.Data = v
		} else {
			v := make([]bool, B*S)
			for i := range v {
				v[i] = i%3 != 1
			}
			x.Data = v
		}
		want := run(build(), x)
		g := build()
		ctx, _ := passRunQuiet(t, g)
		if n := ortgraph.ResultOf[int](ctx, ORTCompat); n != 1 {
			t.Fatalf("%s: ORTCompat rewrote %d nodes, want 1", ortgraph.DTypeName(dt), n)
		}
		if b := CaptureBlockers(g); b != nil {
			t.Errorf("%s: capture blockers %v after the rewrite", ortgraph.DTypeName(dt), b)
		}
		got := run(g, x)
		switch w := want.Data.(type) {
		case []float32:
			for i, v := range got.Data.([]float32) {
				if v != w[i] {
					t.Fatalf("float: element %d = %v, GatherND %v", i, v, w[i])
				}
			}
		case []bool:
			for i, v := range got.Data.([]bool) {
				if v != w[i] {
					t.Fatalf("bool: element %d = %v, GatherND %v", i, v, w[i])
				}
			}
		}
	}
}

func passRunQuiet(t *testing.T, g *ortgraph.Graph) (*ortgraph.Context, error) {
	t.Helper()
	ctx, err := ortgraph.RunPasses(g, nil, nil, ORTCompat)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, err
}
