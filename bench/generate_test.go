package bench

import (
	"strings"
	"testing"
)

// TestGenerateSummaryWithPeer: a result of scripts/hf_generate_bench.py (the keys it writes,
// testdata/hf_generate_peer.json) reads as a bench result, and the generation table shows
// both tools' figures (ortq's KV-cache layout with the export's fusions) with the ortq ÷ peer ratios of decode and prefill.
func TestGenerateSummaryWithPeer(t *testing.T) {
	peer, err := ReadResult("testdata/hf_generate_peer.json")
	if err != nil {
		t.Fatal(err)
	}
	ours := &Result{Schema: Schema, Tool: ToolOrtq, Points: []Point{{Label: "generate batch 1 prompt 128 new 256",
		Generate: &GenerateFigures{Batch: 1, PromptTokens: 128, NewTokens: 256, KVCache: "shared", Fused: "lora,qkv,skip_norm", CUDAGraph: true,
			PrefillTokensPerSec: 20000, TimeToFirstTokenMS: 6.4, DecodeTokensPerSec: 300}}}}
	s := GenerateSummary(ours, Peers{peer})
	for _, want := range []string{"| ortq | 1 | 128 | 256 | shared (fused: lora,qkv,skip_norm) | true | 20,000 | 6.4 | 300.0 |",
		"| transformers | 1 | 128 | 256 |",
		"ortq ÷ transformers: decode 3.00×, prefill 4.00×", "7.00 GiB (torch-allocator)"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	md, err := GenerateMarkdown(ours, Peers{peer})
	if err != nil || !strings.Contains(md, "time to first token") {
		t.Errorf("markdown: %v\n%s", err, md)
	}
}
