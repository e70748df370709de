package export

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/export/exporttest"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestFusedMatchesUnfused: the fused shared export (the default) gives the logits of the
// unfused one (--fuse=false) and the same greedy ids, base and with LoRA, on the default
// model (LoRA on q and v), its NF4 base (MatMulBnb4 packed) and llama32 (LoRA on every
// Linear kind). Fusing changes where
// α/r is applied (folded into B) and the order of the residual sum's reads, nothing else,
// so the bound is the package's 1e-5 of the largest |logit|; measured 0 (α/r = 4 here, a
// power of two, so even the folding is exact).
// Both are held to the eval graph by TestKVCacheMatchesEval.
func TestFusedMatchesUnfused(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		model string
		ids   []int64
	}{
		{"default", []int64{1, 45, 310, 7, 1022, 88, 2047, 5}},
		{"llama32", []int64{1, 17, 99, 4, 127, 60}},
		{"default-nf4", []int64{1, 45, 310, 7, 1022, 88}}, // MatMulBnb4 packed
	} {
		art := exporttest.Artifacts(t, c.model)
		man, err := manifest.ReadManifest(art)
		if err != nil {
			t.Fatal(err)
		}
		adapter, _ := exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 3)
		for _, ad := range []string{"", adapter} {
			var logits [2][]float32
			for i, noFuse := range []bool{false, true} {
				out := filepath.Join(t.TempDir(), "export")
				res, err := Run(Options{Artifacts: art, Adapter: ad, Out: out, KVCache: KVShared, NoFuse: noFuse})
				if err != nil {
					t.Fatal(err)
				}
				if want := !noFuse; slices.Contains(res.Fused, FuseQKV) != want || slices.Contains(res.Fused, FuseSkipNorm) != want {
					t.Errorf("%s: NoFuse %v: fused %v", c.model, noFuse, res.Fused)
				}
				gc, err := ReadGenAIConfig(filepath.Join(out, GenAIConfigFile))
				if err != nil {
					t.Fatal(err)
				}
				d := gc.Model.Decoder
				logits[i] = decodeLogits(t, filepath.Join(out, d.Filename), d.Layers, d.KVHeads, d.HeadSize, c.ids, []int{3, 1, 1, 1, 1, 1}[:len(c.ids)-2])
			}
			diff, scale := maxAbsDiff(logits[0], logits[1]), max(1, maxAbs(logits[1]))
			t.Logf("%s/lora=%v: fused vs unfused max |Δlogit| %.3g (max |logit| %.3g)", c.model, ad != "", diff, scale)
			if diff > 1e-5*scale {
				t.Errorf("%s/lora=%v: fused vs unfused max |Δlogit| %.3g > 1e-5 × %.3g", c.model, ad != "", diff, scale)
			}
			if a, b := argmaxes(logits[0], len(c.ids)), argmaxes(logits[1], len(c.ids)); !slices.Equal(a, b) {
				t.Errorf("%s/lora=%v: greedy ids fused %v, unfused %v", c.model, ad != "", a, b)
			}
		}
	}
}

// argmaxes is the argmax of each of the rows of logits.
func argmaxes(logits []float32, rows int) []int {
	v := len(logits) / rows
	ids := make([]int, rows)
	for r := range ids {
		row := logits[r*v : (r+1)*v]
		ids[r] = slices.Index(row, slices.Max(row))
	}
	return ids
}

// TestFusedNodesPerLayer counts the nodes of one decoder layer (a 2-layer graph's minus a
// 1-layer graph's), so that a fusion that stops applying shows. Unfused, a layer is RMSNorm,
// q/k/v MatMulNBits, four LoRA nodes per target, GroupQueryAttention, o, the residual Add,
// RMSNorm, gate, up, Sigmoid, Mul, Mul, down and the residual Add; fused, the Adds go into
// the two SkipSimplifiedLayerNormalizations, q/k/v are one node, and the LoRA of the targets
// that read one input is one A product plus a MatMul and an Add per base output.
func TestFusedNodesPerLayer(t *testing.T) {
	for _, c := range []struct {
		model         string
		lora          bool
		fused, plain  int
		wantMatMulNBs int // per layer, fused
	}{
		{"default", false, 11, 15, 5},
		{"default", true, 14, 23, 5}, // LoRA on q, v: 1 A + 1 B + 1 Add
		{"llama32", true, 25, 43, 5}, // every kind: qkv 3, o 3, gate+up 5, down 3
	} {
		art := exporttest.Artifacts(t, c.model)
		var ad *Adapter
		if c.lora {
			man, err := manifest.ReadManifest(art)
			if err != nil {
				t.Fatal(err)
			}
			path, _ := exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 4)
			if ad, err = LoadAdapter(path, man); err != nil {
				t.Fatal(err)
			}
		}
		for _, fuse := range []bool{true, false} {
			per := nodesPerLayer(t, art, ad, fuse)
			want := map[bool]int{true: c.fused, false: c.plain}[fuse]
			if per["*"] != want {
				t.Errorf("%s/lora=%v/fuse=%v: %d nodes per layer (%v), want %d", c.model, c.lora, fuse, per["*"], per, want)
			}
			if fuse && (per["MatMulNBits"] != c.wantMatMulNBs || per["SkipSimplifiedLayerNormalization"] != 2 || per["GroupQueryAttention"] != 1) {
				t.Errorf("%s/lora=%v: fused layer ops %v", c.model, c.lora, per)
			}
		}
	}
}

// nodesPerLayer builds the shared export of art with 2 and with 1 layer and returns the
// difference of their node counts, in all ("*") and by op type.
func nodesPerLayer(t *testing.T, art string, ad *Adapter, fuse bool) map[string]int {
	t.Helper()
	var counts [2]map[string]int
	for i, layers := range []int{2, 1} {
		s, err := Open(art, "")
		if err != nil {
			t.Fatal(err)
		}
		if s.Cfg.NumLayers < 2 {
			t.Fatalf("%s: %d layers, the count needs 2", art, s.Cfg.NumLayers)
		}
		s.Cfg.NumLayers = layers
		mode := LoRANone
		if ad != nil {
			mode = LoRASeparate
		}
		m, _, err := BuildLayout(s, ad, mode, KVShared, fuse)
		if err != nil {
			t.Fatal(err)
		}
		counts[i] = map[string]int{"*": len(m.P.Graph.Node)}
		for _, n := range m.P.Graph.Node {
			counts[i][n.OpType]++
		}
	}
	for k, v := range counts[1] {
		counts[0][k] -= v
	}
	for k, v := range counts[0] {
		if v == 0 {
			delete(counts[0], k)
		}
	}
	return counts[0]
}

// TestFuseRefusals: where q, k and v cannot be one MatMulNBits the export writes three,
// says why in a note, and still fuses the rest: block sizes that differ, a merged adapter
// (float MatMuls),
// a double-quantized NF4 absmax; --fuse=false and the concat layout fuse nothing.
func TestFuseRefusals(t *testing.T) {
	for _, c := range []struct {
		name    string
		model   string
		edit    func(*Source)
		mode    LoRAMode
		kv      string
		fuse    bool
		applied []string
		note    string
	}{
		{"block sizes", "llama32", setAttr("model.layers.0.self_attn.k_proj", "block_size", 64), LoRASeparate, KVShared, true,
			[]string{FuseLoRA, FuseQKV, FuseSkipNorm}, "differ in block_size (32, 64, 32)"},
		{"zero points", "llama32", addZeroPoints("model.layers.1.self_attn.v_proj"), LoRANone, KVShared, true,
			[]string{FuseQKV, FuseSkipNorm}, "some have zero points"},
		{"merged", "llama32", nil, LoRAMerged, KVShared, true, []string{FuseSkipNorm}, "--merge"},
		{"double-quantized", "default-nf4-dq", nil, LoRASeparate, KVShared, true, []string{FuseLoRA, FuseSkipNorm}, "double-quantized"},
		{"fuse off", "llama32", nil, LoRASeparate, KVShared, false, nil, ""},
		{"concat", "llama32", nil, LoRASeparate, KVConcat, true, nil, ""},
	} {
		art := exporttest.Artifacts(t, c.model)
		man, err := manifest.ReadManifest(art)
		if err != nil {
			t.Fatal(err)
		}
		path, _ := exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 5)
		ad, err := LoadAdapter(path, man)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(art, "")
		if err != nil {
			t.Fatal(err)
		}
		if c.edit != nil {
			c.edit(s)
		}
		m, fz, err := BuildLayout(s, ad, c.mode, c.kv, c.fuse)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(fz.Applied, c.applied) {
			t.Errorf("%s: applied %v, want %v", c.name, fz.Applied, c.applied)
		}
		notes := strings.Join(fz.Notes, "\n")
		if (c.note == "") != (notes == "") || !strings.Contains(notes, c.note) {
			t.Errorf("%s: notes %q, want one with %q", c.name, notes, c.note)
		}
		qkv := 0
		for _, n := range m.P.Graph.Node {
			if n.OpType == "MatMulNBits" && strings.Contains(n.Name, "self_attn") && !strings.Contains(n.Name, "o_proj") {
				qkv++
			}
		}
		if slices.Contains(c.applied, FuseQKV) && qkv != 1+3 { // one layer packed, the edited one not
			t.Errorf("%s: %d q/k/v MatMulNBits over 2 layers, want 1 + 3", c.name, qkv)
		}
		meta := ""
		for _, kv := range m.P.MetadataProps {
			if kv.Key == MetaFused {
				meta = kv.Value
			}
		}
		want := map[bool]string{true: strings.Join(c.applied, ","), false: "none"}[len(c.applied) > 0]
		if c.kv == KVConcat && meta != "" || c.kv == KVShared && meta != want {
			t.Errorf("%s: metadata %s = %q, want %q", c.name, MetaFused, meta, want)
		}
	}
}

// setAttr sets an integer attribute of module mod's base node (on a copy: the Source's
// graph is shared with nothing else here).
func setAttr(mod, name string, v int64) func(*Source) {
	return func(s *Source) {
		for _, a := range s.Linears[mod].Node.Attribute {
			if a.Name == name {
				a.I = v
			}
		}
	}
}

// addZeroPoints gives module mod's base node explicit zero points, all 8 (the fixture is
// symmetric, whose implicit zero point is 8): uint8 [N, ceil(blocks/2)].
func addZeroPoints(mod string) func(*Source) {
	return func(s *Source) {
		n := s.Linears[mod].Node
		rows, bs := ortgraph.AttrInt(n, "N", 0), ortgraph.AttrInt(n, "block_size", 0)
		cols := (ortgraph.AttrInt(n, "K", 0)/bs + 1) / 2
		raw := bytes.Repeat([]byte{0x88}, int(rows*cols))
		n.Input = append(n.Input[:3], s.G.AddInitializer(ortgraph.BytesTensor(mod+".weight_zero_points", ortgraph.Uint8, []int64{rows, cols}, raw)))
	}
}
