package export

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/export/exporttest"
	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
)

// TestGEMVConditions: each condition of ONNX Runtime's CUDA 4-bit GEMV (matmul_nbits.cc,
// TryMatMul4Bits) that a MatMulNBits node breaks is named, and a node prepare writes
// (4 bits, block 32, no zero points or packed uint8 ones) passes.
func TestGEMVConditions(t *testing.T) {
	inits := map[string]*onnxpb.TensorProto{
		"zp8":  {Name: "zp8", DataType: int32(onnxpb.TensorProto_UINT8)},
		"zp16": {Name: "zp16", DataType: int32(onnxpb.TensorProto_FLOAT16)},
	}
	node := func(bits, bs, n, k int64, ins ...string) *onnxpb.NodeProto {
		return &onnxpb.NodeProto{OpType: "MatMulNBits", Name: "m", Input: append([]string{"x", "w", "s"}, ins...),
			Attribute: []*onnxpb.AttributeProto{ortgraph.AInt("bits", bits), ortgraph.AInt("block_size", bs),
				ortgraph.AInt("N", n), ortgraph.AInt("K", k)}}
	}
	for _, c := range []struct {
		name string
		n    *onnxpb.NodeProto
		want string
	}{
		{"symmetric", node(4, 32, 3072, 3072), ""},
		{"uint8 zero points", node(4, 128, 128256, 3072, "zp8"), ""},
		{"float zero points", node(4, 32, 3072, 3072, "zp16"), "zero points"},
		{"8 bits", node(8, 32, 3072, 3072), "bits 8"},
		{"block 256", node(4, 256, 3072, 3072), "block_size 256"},
		{"N odd", node(4, 32, 3071, 3072), "multiples of 8"},
		{"g_idx", node(4, 32, 3072, 3072, "", "gidx"), "g_idx"},
		{"bias", node(4, 32, 3072, 3072, "", "", "b"), "bias"},
	} {
		if got := gemvBlocker(c.n, inits); (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// TestExportTakesGEMV: the default model prepared with --quantize-lm-head exports in both
// KV-cache layouts with every Linear, the 4-bit lm_head included, on the GEMV path (no
// warning), and the export's logits are the eval graph's.
func TestExportTakesGEMV(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	o := prepare.DefaultOptions()
	var err error
	if o.Model, _, err = defaultmodel.Extract(filepath.Join(dir, "model")); err != nil {
		t.Fatal(err)
	}
	o.Out, o.QuantizeLMHead = filepath.Join(dir, "art"), true
	if _, err := prepare.Run(o, nil); err != nil {
		t.Fatal(err)
	}
	man, err := manifest.ReadManifest(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int64{1, 45, 310, 7, 1022}
	want := exporttest.EvalLogits(t, o.Out, man, ids, nil)
	for _, kv := range []string{KVConcat, KVShared} {
		out := filepath.Join(dir, kv)
		res, err := Run(Options{Artifacts: o.Out, Out: out, KVCache: kv})
		if err != nil {
			t.Fatal(err)
		}
		m, err := ortgraph.Load(filepath.Join(out, ModelFile))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, nd := range m.P.Graph.Node {
			if nd.OpType == "MatMulNBits" && strings.Contains(nd.Name, "lm_head") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d 4-bit lm_head nodes, want 1", kv, n)
		}
		for _, w := range res.Warnings {
			if strings.Contains(w, "GEMV") {
				t.Errorf("%s: %s", kv, w)
			}
		}
		got := decodeLogits(t, filepath.Join(out, ModelFile), 4, 2, 32, ids, []int{2, 1, 1, 1})
		if d, scale := maxAbsDiff(want, got), math.Max(1, maxAbs(want)); d > 1e-5*scale {
			t.Errorf("%s: max |Δlogit| %.3g against the eval graph (max |logit| %.3g)", kv, d, scale)
		}
	}
}
