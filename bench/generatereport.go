package bench

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/ortq/ortq/internal/fsutil"
)

// GenerateSummary is the table of `ortq bench generate`: ortq's point, then the peers'
// (scripts/hf_generate_bench.py), with decode and prefill ratios ortq ÷ peer.
func GenerateSummary(r *Result, peers Peers) string {
	var b strings.Builder
	b.WriteString("| tool | batch | prompt | new | KV cache | CUDA graph | prefill tokens/s | time to first token (ms) | decode tokens/s | " +
		"per-token p50 / p95 (ms) | peak GPU | peak host RSS |\n")
	b.WriteString("|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, res := range append([]*Result{r}, peers...) {
		for _, p := range res.Points {
			g := p.Generate
			if g == nil {
				continue
			}
			gpu := "n/a"
			if v, src := peerGPUPeak(&p); v > 0 {
				gpu = fmt.Sprintf("%s (%s)", fbytes(v), src)
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %v | %s | %s | %s | %s / %s | %s | %s |\n", mdEscape(res.Tool), g.Batch, g.PromptTokens, g.NewTokens,
				kvCell(g), g.CUDAGraph, ftps(g.PrefillTokensPerSec), fnum(g.TimeToFirstTokenMS, 1), ftps(g.DecodeTokensPerSec),
				fnum(g.TokenLatency.P50MS, 2), fnum(g.TokenLatency.P95MS, 2), gpu, fbytes(p.PeakRSSBytes))
		}
	}
	ours := generateFigures(r)
	for _, peer := range peers {
		if theirs := generateFigures(peer); ours != nil && theirs != nil {
			fmt.Fprintf(&b, "\nortq ÷ %s: decode %s, prefill %s\n", mdEscape(peer.Tool),
				fx(ratio(ours.DecodeTokensPerSec, theirs.DecodeTokensPerSec)), fx(ratio(ours.PrefillTokensPerSec, theirs.PrefillTokensPerSec)))
		}
	}
	return b.String()
}

// generateFigures is the first point's figures (nil when it has none).
func generateFigures(r *Result) *GenerateFigures {
	if len(r.Points) == 0 {
		return nil
	}
	return r.Points[0].Generate
}

// GenerateMarkdown is report.md of `ortq bench generate`: machine, the table, notes and
// the configuration, as Markdown lays out a training report.
func GenerateMarkdown(r *Result, peers Peers) (string, error) {
	var b strings.Builder
	writeMachine(&b, r)
	b.WriteString("\n## Results\n\n")
	b.WriteString(GenerateSummary(r, peers))
	b.WriteString("\nPrefill: the prompts (all rows, right-padded) in one run, the first new token of every row included, so the time to " +
		"first token is the prefill's. Decode: one run per step for every row; tokens/s counts every row's tokens after its first. " +
		"Peak GPU: NVML, sampled every few ms from opening the model to closing it; peak host RSS over the same span.\n")
	writeNotes(&b, append([]*Result{r}, peers...))
	if err := writeConfig(&b, r); err != nil {
		return "", err
	}
	return b.String(), nil
}

// WriteGenerateMarkdown writes GenerateMarkdown(r, peers) to path, atomically.
func WriteGenerateMarkdown(path string, r *Result, peers Peers) error {
	md, err := GenerateMarkdown(r, peers)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error { _, err := w.WriteString(md); return err })
}

// kvCell is the KV-cache column: the layout, and the decode graph's fusions where the
// export recorded them.
func kvCell(g *GenerateFigures) string {
	if g.Fused == "" {
		return orDefault(g.KVCache, "–")
	}
	return orDefault(g.KVCache, "–") + " (fused: " + g.Fused + ")"
}
