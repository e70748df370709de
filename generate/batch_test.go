package generate

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/export/exporttest"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// openExport exports art in the KV-cache layout kv (with adapter, "" for none) and opens it
// on the CPU.
func openExport(t *testing.T, art, adapter, kv string) *Model {
	t.Helper()
	return openExportWith(t, export.Options{Artifacts: art, Adapter: adapter, KVCache: kv})
}

// openExportWith exports with o (its Out a temporary directory) and opens it on the CPU.
func openExportWith(t *testing.T, o export.Options) *Model {
	t.Helper()
	o.Out = filepath.Join(t.TempDir(), "export-"+o.KVCache)
	if _, err := export.Run(o); err != nil {
		t.Fatal(err)
	}
	m, err := Open(o.Out, ortrun.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestBatchMatchesAlone: prompts of different lengths decoded together through the shared
// cache (right-padded prefill, per-row positions, argmax on the device's session) give
// every row the greedy ids of that prompt decoded alone through the concat export, which
// TestGreedyMatchesEvalGraph holds to the eval graph; with LoRA, on both fixtures. Rows
// stopping at EOS stop alone; a second batch of the same size reuses the buffers (and, on
// CUDA, the captured graph), one of another size gets new ones.
func TestBatchMatchesAlone(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		model   string
		prompts [][]int64
		lora    bool
	}{
		{"default", [][]int64{{1, 45, 310, 7}, {1, 2000}, {1, 9, 8, 7, 6, 5, 4, 3}}, false},
		{"default", [][]int64{{1, 45, 310, 7}, {1, 2000, 17}}, true},
		{"llama32", [][]int64{{1, 17, 99}, {1, 5, 6, 7, 8, 9}}, true},
	} {
		art := exporttest.Artifacts(t, c.model)
		adapter := ""
		if c.lora {
			man, err := manifest.ReadManifest(art)
			if err != nil {
				t.Fatal(err)
			}
			adapter, _ = exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 2)
		}
		shared, alone := openExport(t, art, adapter, export.KVShared), openExport(t, art, adapter, export.KVConcat)
		if !slices.ContainsFunc(shared.Notes, func(n string) bool { return strings.Contains(n, "shared KV cache") }) {
			t.Fatalf("%s: the shared export does not decode through the shared cache: notes %q", c.model, shared.Notes)
		}
		s, _ := NewSampler(0, 0, 1, 0)
		streamed := make([][]int64, len(c.prompts))
		got, st, err := shared.GenerateBatch(c.prompts, Options{MaxNewTokens: 10, Sampler: s,
			OnRowToken: func(row, id int) error { streamed[row] = append(streamed[row], int64(id)); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range c.prompts {
			want, _, err := alone.Generate(p, Options{MaxNewTokens: 10, Sampler: s})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got[i], want) || !slices.Equal(streamed[i], want) {
				t.Errorf("%s lora=%v row %d: batch %v (streamed %v), alone %v", c.model, c.lora, i, got[i], streamed[i], want)
			}
		}
		if st.Rows != len(c.prompts) || st.NewTokens != 10*len(c.prompts) || len(st.Steps) != 9 {
			t.Errorf("%s: stats rows %d new %d steps %d", c.model, st.Rows, st.NewTokens, len(st.Steps))
		}
		// The concat export takes the prompts one after another: the same ids, a step each.
		seq, sst, err := alone.GenerateBatch(c.prompts, Options{MaxNewTokens: 10, Sampler: s})
		if err != nil || !slices.EqualFunc(seq, got, slices.Equal) || len(sst.Steps) != 9*len(c.prompts) || sst.Rows != len(c.prompts) {
			t.Errorf("%s: concat GenerateBatch %v (%v, %d steps), shared %v", c.model, seq, err, len(sst.Steps), got)
		}
		// Row 0's third token as EOS: row 0 ends there (EOS kept), the others run on.
		eos := int(got[0][2])
		stop, _, err := shared.GenerateBatch(c.prompts, Options{MaxNewTokens: 10, Sampler: s, EOS: []int{eos}})
		if err != nil {
			t.Fatal(err)
		}
		for i := range c.prompts {
			want := got[i]
			if k := slices.Index(want, int64(eos)); k >= 0 {
				want = want[:k+1]
			}
			if !slices.Equal(stop[i], want) {
				t.Errorf("%s: with EOS %d row %d is %v, want %v", c.model, eos, i, stop[i], want)
			}
		}
		// Another size after the reused buffers of the EOS run: new buffers, same ids.
		one, _, err := shared.Generate(c.prompts[0], Options{MaxNewTokens: 10, Sampler: s})
		if err != nil || !slices.Equal(one, got[0]) {
			t.Errorf("%s: row 0 alone through the shared export: %v (%v), in the batch %v", c.model, one, err, got[0])
		}
	}
}

// TestSharedSamplingMatchesConcat: sampling (temperature, top-k, top-p, seeded) draws the
// same tokens from the shared export as from the concat one: the logits come back to the
// host and the same Sampler consumes them in the same order.
func TestSharedSamplingMatchesConcat(t *testing.T) {
	ortruntest.Lib(t)
	art := exporttest.Artifacts(t, "default")
	var ids [2][]int64
	for i, kv := range []string{export.KVConcat, export.KVShared} {
		m := openExport(t, art, "", kv)
		s, _ := NewSampler(0.8, 50, 0.95, 7)
		var err error
		if ids[i], _, err = m.Generate([]int64{1, 45, 310, 7}, Options{MaxNewTokens: 12, Sampler: s}); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(ids[0], ids[1]) {
		t.Errorf("sampled ids: concat %v, shared %v", ids[0], ids[1])
	}
}

// TestSharedFloat16: a float16 model (activations and cache float16, as on CUDA, where
// GroupQueryAttention has float16 kernels only) decodes the same greedy ids from the shared
// export, fused (the default: packed QKV, packed LoRA, SkipSimplifiedLayerNormalization in
// float16) and unfused, as from the concat one, base and with LoRA on every Linear kind.
func TestSharedFloat16(t *testing.T) {
	ortruntest.Lib(t)
	art := exporttest.Artifacts(t, "llama32-fp16")
	man, err := manifest.ReadManifest(art)
	if err != nil {
		t.Fatal(err)
	}
	adapter, _ := exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 6)
	for _, ad := range []string{"", adapter} {
		var ids [3][]int64
		for i, o := range []export.Options{{KVCache: export.KVConcat}, {KVCache: export.KVShared}, {KVCache: export.KVShared, NoFuse: true}} {
			o.Artifacts, o.Adapter = art, ad
			m := openExportWith(t, o)
			if want := map[bool]string{false: "lora,qkv,skip_norm", true: "none"}[o.NoFuse]; i > 0 && ad != "" && m.Fused() != want {
				t.Errorf("NoFuse %v: Fused() %q, want %q", o.NoFuse, m.Fused(), want)
			}
			s, _ := NewSampler(0, 0, 1, 0)
			if ids[i], _, err = m.Generate([]int64{1, 17, 99, 4}, Options{MaxNewTokens: 12, Sampler: s}); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(ids[0], ids[1]) || !slices.Equal(ids[0], ids[2]) {
			t.Errorf("float16 greedy ids (lora %v): concat %v, shared fused %v, unfused %v", ad != "", ids[0], ids[1], ids[2])
		}
	}
}

// TestSharedONNXAdapterFused: an onnx-adapter export in the shared layout is fused like the
// plain one (packed q/k/v, the LoRA's packed A and scaled block B as the adapter's inputs),
// decodes as the base model until UseAdapter reads its .onnx_adapter, and then gives the
// greedy ids of the export with the LoRA built in, on the default model (q, v) and llama32
// (every Linear kind).
func TestSharedONNXAdapterFused(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		model  string
		prompt []int64
	}{{"default", []int64{1, 45, 310, 7}}, {"llama32", []int64{1, 17, 99}}} {
		art := exporttest.Artifacts(t, c.model)
		man, err := manifest.ReadManifest(art)
		if err != nil {
			t.Fatal(err)
		}
		adapter, _ := exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 7)
		o := export.Options{Artifacts: art, Adapter: adapter, KVCache: export.KVShared, Format: export.FormatONNXAdapter}
		inputs := openExportWith(t, o)
		if !strings.Contains(inputs.fused, export.FuseLoRA) || !strings.Contains(inputs.fused, export.FuseQKV) {
			t.Fatalf("%s: onnx-adapter shared export fused %q, want lora and qkv", c.model, inputs.fused)
		}
		s, _ := NewSampler(0, 0, 1, 0)
		gen := func(m *Model) []int64 {
			got, _, err := m.GenerateBatch([][]int64{c.prompt}, Options{MaxNewTokens: 12, Sampler: s})
			if err != nil {
				t.Fatal(err)
			}
			return got[0]
		}
		base, withLoRA := gen(openExport(t, art, "", export.KVShared)), gen(openExport(t, art, adapter, export.KVShared))
		if slices.Equal(base, withLoRA) {
			t.Fatalf("%s: the random adapter does not change the greedy ids; the test would not see it missing", c.model)
		}
		if got := gen(inputs); !slices.Equal(got, base) {
			t.Errorf("%s: onnx-adapter export without its adapter %v, base %v", c.model, got, base)
		}
		if err := inputs.UseAdapter(filepath.Join(inputs.Dir, export.AdapterFile)); err != nil {
			t.Fatal(err)
		}
		if got := gen(inputs); !slices.Equal(got, withLoRA) {
			t.Errorf("%s: onnx-adapter export with its adapter %v, LoRA built in %v", c.model, got, withLoRA)
		}
	}
}

// TestBnb4DecodesUncaptured: ONNX Runtime's CUDA MatMulBnb4 copies its code table from the
// host stack on every run, which a replayed CUDA graph reads after it is gone, so an NF4
// export's decoder lists it as a capture blocker (and decodes uncaptured on CUDA), as the NF4
// artifacts' device steps do for train; an int4 export lists none.
func TestBnb4DecodesUncaptured(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		model string
		want  []string
	}{{"default", nil}, {"default-nf4", []string{"MatMulBnb4"}}, {"default-nf4-dq", []string{"MatMulBnb4"}}} {
		art := exporttest.Artifacts(t, c.model)
		m := openExport(t, art, "", export.KVShared)
		if !slices.Equal(m.blockers, c.want) {
			t.Errorf("%s: decoder capture blockers %v, want %v", c.model, m.blockers, c.want)
		}
		man, err := manifest.ReadManifest(art)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range []*manifest.Graph{man.TrainStep} {
			if !slices.Equal(st.CaptureBlockers, c.want) {
				t.Errorf("%s: device step capture blockers %v, want %v", c.model, st.CaptureBlockers, c.want)
			}
		}
	}
}
