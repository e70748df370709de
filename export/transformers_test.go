package export

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/export/exporttest"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestDecodeMatchesTransformers: the exported float32 model (prepare --bits 16), decoded one
// token at a time through its KV cache, gives the logits transformers' own fp32 forward gave
// (ref.safetensors' logits_fp32, eager attention, committed with the checkpoint fixtures by
// testdata/gen/make_hf_checkpoints.py) for the batch's unpadded 10-token row, within 1e-4:
// llama32 (GQA, tied embeddings, llama3 rotary scaling, head_dim ≠ hidden/heads), llama2
// (multi-head, untied), and llama32 imported with the opset-23 fused ops (its norms are
// RMSNormalization nodes).
func TestDecodeMatchesTransformers(t *testing.T) {
	ortruntest.Lib(t)
	for _, fixture := range []string{"llama32-fp32", "llama2-fp32", "llama32-fp32-fused"} {
		variant := strings.Split(fixture, "-")[0]
		art := exporttest.Artifacts(t, fixture)
		ref, err := safetensors.ReadFile(filepath.Join(exporttest.RepoRoot(), "hfimport", "testdata", "hf", variant, "ref.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		idsT, _ := ref.Get("input_ids")
		logitsT, _ := ref.Get("logits_fp32")
		allIDs, _ := idsT.Int64s()
		allLogits, _ := logitsT.Float32s()
		seq, vocab := int(idsT.Shape[1]), int(logitsT.Shape[2])
		ids, want := allIDs[:seq], allLogits[:seq*vocab] // row 0 has no padding
		out := filepath.Join(t.TempDir(), "export")
		if _, err := Run(Options{Artifacts: art, Out: out}); err != nil {
			t.Fatal(err)
		}
		gc, err := ReadGenAIConfig(filepath.Join(out, GenAIConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		d := gc.Model.Decoder
		pieces := make([]int, seq)
		for i := range pieces {
			pieces[i] = 1
		}
		got := decodeLogits(t, filepath.Join(out, d.Filename), d.Layers, d.KVHeads, d.HeadSize, ids, pieces)
		diff := maxAbsDiff(want, got)
		t.Logf("%s: max |Δlogit| vs transformers %.3g over %d tokens", fixture, diff, seq)
		if diff > 1e-4 {
			t.Errorf("%s: max |Δlogit| vs transformers %.3g > 1e-4", fixture, diff)
		}
	}
}
