package passes_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// rmsGraph is a tiny graph holding one decomposed RMSNorm of x [2, 3, 8] in the given
// spelling, with output y.
type rmsGraph struct {
	name  string
	dt    int32 // element type of x, w and y
	build func(g *ortgraph.Graph) string
}

func rmsGraphs() []rmsGraph {
	f := ortgraph.Float
	norm := func(g *ortgraph.Graph, xs string, pow bool, axis int64, eps float32) string {
		var sq string
		if pow {
			sq = g.Op("Pow", []string{xs, g.ConstF(f, 2)})
		} else {
			sq = g.Op("Mul", []string{xs, xs})
		}
		m := g.Op("ReduceMean", []string{sq, g.ConstI64(axis)}, ortgraph.AInt("keepdims", 1))
		r := g.Op("Reciprocal", []string{g.Op("Sqrt", []string{g.Op("Add", []string{m, g.ConstF(f, eps)})})})
		return g.Op("Mul", []string{xs, r})
	}
	cast := func(g *ortgraph.Graph, v string, to int32) string {
		return g.Op("Cast", []string{v}, ortgraph.AInt("to", int64(to)))
	}
	return []rmsGraph{
		// The stock dynamo export of a float32 model.
		{"exporter-float32", f, func(g *ortgraph.Graph) string {
			return g.Op("Mul", []string{"w", norm(g, "x", true, -1, 1e-5)})
		}},
		// `ortq import`/`synth` in float16: float32 inside, cast back before the weight.
		{"import-float16", ortgraph.Float16, func(g *ortgraph.Graph) string {
			return g.Op("Mul", []string{"w", cast(g, norm(g, cast(g, "x", f), true, -1, 1e-6), ortgraph.Float16)})
		}},
		// x·x instead of Pow, the axis by number, the weight on the right.
		{"mul-square-axis2", f, func(g *ortgraph.Graph) string {
			return g.Op("Mul", []string{norm(g, "x", false, 2, 1e-5), "w"})
		}},
		// Not fused: the mean runs over axis 1 (the reason is logged).
		{"skip-axis1", f, func(g *ortgraph.Graph) string {
			return g.Op("Mul", []string{"w", norm(g, "x", true, 1, 1e-5)})
		}},
		// A Cast after the fused norm stays.
		{"import-float16-then-cast", ortgraph.Float16, func(g *ortgraph.Graph) string {
			return cast(g, g.Op("Mul", []string{"w", cast(g, norm(g, cast(g, "x", f), true, -1, 1e-6), ortgraph.Float16)}), ortgraph.Float16)
		}},
		// The opset-23 op, as the stock exporter writes it at opset 23.
		{"rmsnormalization-float16", ortgraph.Float16, func(g *ortgraph.Graph) string {
			return g.Op("RMSNormalization", []string{"x", "w"}, ortgraph.AFloat("epsilon", 1e-6), ortgraph.AInt("stash_type", 1))
		}},
		// Not fused: float16 in, float32 out (no Cast back; the weight applied in float32).
		{"skip-float32-out", ortgraph.Float16, func(g *ortgraph.Graph) string {
			return g.Op("Mul", []string{cast(g, "w", f), norm(g, cast(g, "x", f), true, -1, 1e-6)})
		}},
	}
}

func newRMSModel(c rmsGraph) *ortgraph.Model {
	m := &ortgraph.Model{P: &onnxpb.ModelProto{
		IrVersion:   11,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 23}},
		Graph:       &onnxpb.GraphProto{Name: c.name},
	}, Dir: "."}
	m.P.Graph.Input = []*onnxpb.ValueInfoProto{
		{Name: "x", Type: ortgraph.TensorType(c.dt, []int64{2, 3, 8})},
		{Name: "w", Type: ortgraph.TensorType(c.dt, []int64{8})},
	}
	g := ortgraph.NewGraph(m)
	y := c.build(g)
	if g.Type(y) == nil {
		g.SetType(y, ortgraph.TensorType(c.dt, []int64{2, 3, 8}))
	}
	out := g.Op("Identity", []string{y})
	g.P.Node[len(g.P.Node)-1].Output[0] = "y"
	_ = out
	m.P.Graph.Output = []*onnxpb.ValueInfoProto{{Name: "y", Type: g.Type(y)}}
	g.Reindex()
	return m
}

// runRMS runs a tiny RMSNorm graph on ORT's CPU provider and returns y as float64. The
// decomposed graphs run unoptimised: ORT's own SimplifiedLayerNormFusion would otherwise
// fuse them (in inference graphs, where nothing else reads the intermediate values) and the
// comparison would compare the kernel with itself.
func runRMS(t *testing.T, m *ortgraph.Model, dt int32, noopt bool) []float64 {
	t.Helper()
	buf, err := proto.Marshal(m.P)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ortrun.NewSessionFromBytes(buf, ortrun.Options{Device: "cpu", IntraOpThreads: 1, DisableOptimizations: noopt})
	if err != nil {
		t.Fatalf("%s: %v", m.P.Graph.Name, err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	in := map[string]*ortrun.Tensor{}
	for _, name := range []string{"x", "w"} {
		shape := []int64{2, 3, 8}
		if name == "w" {
			shape = []int64{8}
		}
		v := make([]float32, ortgraph.NumElements(shape))
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		in[name] = f32Tensor(v, shape, dt)
	}
	res, err := s.Run(in, []string{"y"})
	if err != nil {
		t.Fatalf("%s: %v", m.P.Graph.Name, err)
	}
	return floats(res["y"])
}

func f32Tensor(v []float32, shape []int64, dt int32) *ortrun.Tensor {
	if dt == ortgraph.Float16 {
		h := make([]uint16, len(v))
		for i := range v {
			h[i] = ortrun.Float32ToFloat16(v[i])
		}
		return &ortrun.Tensor{DType: ortrun.Float16, Shape: shape, Data: h}
	}
	return &ortrun.Tensor{DType: ortrun.Float32, Shape: shape, Data: v}
}

func floats(t *ortrun.Tensor) []float64 {
	var out []float64
	switch d := t.Data.(type) {
	case []float32:
		for _, x := range d {
			out = append(out, float64(x))
		}
	case []uint16:
		for _, x := range d {
			out = append(out, float64(ortrun.Float16ToFloat32(x)))
		}
	}
	return out
}

// relDiff is max|a−b| / max|b|.
func relDiff(a, b []float64) float64 {
	maxAbs, maxErr := 1e-30, 0.0
	for i := range b {
		maxAbs = math.Max(maxAbs, math.Abs(b[i]))
		maxErr = math.Max(maxErr, math.Abs(a[i]-b[i]))
	}
	return maxErr / maxAbs
}

// TestRMSNormPass: each spelling of RMSNorm becomes one SimplifiedLayerNormalization (or is
// left with the reason in the log), the rewritten graphs are kept as a golden, and on ORT's
// CPU provider they compute what the decomposed graphs computed.
func TestRMSNormPass(t *testing.T) {
	ortruntest.Lib(t)
	var dump strings.Builder
	for _, c := range rmsGraphs() {
		before := newRMSModel(c)
		after := &ortgraph.Model{P: proto.Clone(before.P).(*onnxpb.ModelProto), Dir: "."}
		g := ortgraph.NewGraph(after)
		var logs []string
		ctx, err := ortgraph.RunPasses(g, nil, func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }, passes.RMSNorm)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		res := ortgraph.ResultOf[*passes.RMSNormResult](ctx, passes.RMSNorm)
		g.Prune()
		fmt.Fprintf(&dump, "# %s: fused %d\n", c.name, res.Fused)
		for _, l := range logs {
			fmt.Fprintf(&dump, "# %s\n", l)
		}
		dump.WriteString(ortgraph.Dump(g))
		wantFused := 1
		if strings.HasPrefix(c.name, "skip-") {
			wantFused = 0
		}
		if res.Fused != wantFused {
			t.Errorf("%s: fused %d norms, want %d (log: %v)", c.name, res.Fused, wantFused, logs)
		}
		want, got := runRMS(t, before, c.dt, true), runRMS(t, after, c.dt, false)
		// float16: LlamaRMSNorm rounds x·r to half before the weight, the fused kernel
		// rounds once at the end: one half-precision ulp apart at most.
		tol := 1e-6
		if c.dt == ortgraph.Float16 {
			tol = 2e-3
		}
		if d := relDiff(got, want); d > tol {
			t.Errorf("%s: rewritten graph differs from the decomposed one: %.3g > %.3g", c.name, d, tol)
		} else {
			t.Logf("%s: fused %d, max rel diff %.2g", c.name, res.Fused, d)
		}
	}
	golden(t, "rmsnorm.txt", dump.String())
}

// TestRMSNormPassModels: on the exporter's fixtures and on `synth` graphs (float32 and
// float16), every RMSNorm of the decoder (2 per layer + the final norm) is fused, the
// fused nodes keep the names of the weight Muls (or RMSNormalization nodes) they replace,
// which carry their layer, and the logits are unchanged.
func TestRMSNormPassModels(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	paths := map[string]string{}
	for _, v := range []string{"gqa_tied_llama3", "mask_untied", "opset23_gqa"} {
		paths[v] = "../../testdata/llama/" + v + "/model.onnx"
	}
	for _, dt := range []string{"float32", "float16"} {
		res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 7, Common: hfimport.Common{Out: filepath.Join(dir, "synth-"+dt), DType: dt}})
		if err != nil {
			t.Fatal(err)
		}
		paths["synth-"+dt] = res.Model
	}
	for _, name := range []string{"gqa_tied_llama3", "mask_untied", "opset23_gqa", "synth-float32", "synth-float16"} {
		t.Run(name, func(t *testing.T) {
			before := loadFrom(t, paths[name])
			after := loadFrom(t, paths[name])
			names := map[string]bool{}
			for _, n := range after.P.Node {
				if (n.OpType == "Mul" || n.OpType == "RMSNormalization") && len(n.Input) == 2 && strings.Contains(n.Input[0]+n.Input[1], "norm.weight") {
					names[n.Name] = true
				}
			}
			// ORTCompat: ORT 1.29 runs the opset-23 export's RotaryEmbedding only with it.
			if _, err := ortgraph.RunPasses(before, nil, nil, passes.ORTCompat); err != nil {
				t.Fatal(err)
			}
			ctx, err := ortgraph.RunPasses(after, nil, nil, passes.ORTCompat, passes.RMSNorm)
			if err != nil {
				t.Fatal(err)
			}
			res := ortgraph.ResultOf[*passes.RMSNormResult](ctx, passes.RMSNorm)
			after.Prune()
			if res.Fused == 0 || res.Fused != len(names) || len(res.Skipped) > 0 {
				t.Errorf("fused %d of %d norms; skipped %v", res.Fused, len(names), res.Skipped)
			}
			for _, n := range after.P.Node {
				switch n.OpType {
				case "SimplifiedLayerNormalization":
					if !names[n.Name] {
						t.Errorf("fused node %q does not carry the name of a weight Mul", n.Name)
					}
				case "Pow", "Sqrt", "Reciprocal", "RMSNormalization":
					t.Errorf("%s %q left in the graph", n.OpType, n.Name)
				}
			}
			want, got := logits(t, before, dir, name+"-before", true), logits(t, after, dir, name+"-after", false)
			tol := 1e-5
			if strings.HasSuffix(name, "float16") {
				tol = 1e-2
			}
			if d := relDiff(got, want); d > tol {
				t.Errorf("logits differ: max rel diff %.3g > %.3g", d, tol)
			} else {
				t.Logf("fused %d norms; logits max rel diff %.2g; nodes %d → %d", res.Fused, d, len(before.P.Node), len(after.P.Node))
			}
		})
	}
}

// logits saves g's model and runs it on a fixed batch (2 rows of 7 tokens), unoptimised
// with noopt (see runRMS).
func logits(t *testing.T, g *ortgraph.Graph, dir, name string, noopt bool) []float64 {
	t.Helper()
	path := filepath.Join(dir, name, "model.onnx")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := g.M.Save(path, "model.onnx.data", 1024); err != nil {
		t.Fatal(err)
	}
	s, err := ortrun.NewSession(path, ortrun.Options{Device: "cpu", IntraOpThreads: 1, DisableOptimizations: noopt})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const rows, seq = 2, 7
	ids, mask := make([]int64, rows*seq), make([]int64, rows*seq)
	for i := range ids {
		ids[i] = int64((i*37 + 11) % 200)
		mask[i] = 1
	}
	mask[seq] = 0 // one padded position
	in := map[string]*ortrun.Tensor{"input_ids": {DType: ortrun.Int64, Shape: []int64{rows, seq}, Data: ids}}
	for _, n := range s.InputNames() {
		if n == "attention_mask" {
			in[n] = &ortrun.Tensor{DType: ortrun.Int64, Shape: []int64{rows, seq}, Data: mask}
		}
	}
	res, err := s.Run(in, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	return floats(res["logits"])
}
