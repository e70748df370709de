package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/bench"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestBenchGenerate: `bench generate --model default` exports the embedded model with a
// shared KV cache, decodes a batch and writes report.json (one point whose generate figures
// are the measured speeds: positive, the configured shape, one latency per decode step; its
// peak host RSS measured),
// report.md and memory.jsonl; a bad flag is refused in one line naming it.
func TestBenchGenerate(t *testing.T) {
	ortruntest.Lib(t)
	out := filepath.Join(t.TempDir(), "bench")
	if err := run(t, "bench", "generate", "--model", "default", "--threads", "1", "--batch", "2", "--prompt-tokens", "8",
		"--new-tokens", "5", "--warmup", "0", "--runs", "2", "--out", out, "--quiet"); err != nil {
		t.Fatal(err)
	}
	r, err := bench.ReadResult(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Points) != 1 || r.Points[0].Generate == nil {
		t.Fatalf("report.json: points %+v, want one with generate figures", r.Points)
	}
	g := r.Points[0].Generate
	if g.Batch != 2 || g.PromptTokens != 8 || g.NewTokens != 5 || g.KVCache != "shared" || g.CUDAGraph {
		t.Errorf("figures %+v: want batch 2, prompt 8, new 5, shared, no CUDA graph on the CPU", g)
	}
	if g.PrefillTokensPerSec <= 0 || g.DecodeTokensPerSec <= 0 || g.TimeToFirstTokenMS <= 0 || g.TokenLatency.Count != 2*4 {
		t.Errorf("figures %+v: want positive speeds and 8 decode steps (2 runs × 4)", g)
	}
	if r.Points[0].PeakRSSBytes == 0 {
		t.Error("no peak host RSS")
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil || !strings.Contains(string(md), "time to first token") {
		t.Errorf("report.md: %v\n%s", err, md)
	}
	if _, err := os.Stat(filepath.Join(out, "memory.jsonl")); err != nil {
		t.Error(err)
	}
	err = run(t, "bench", "generate", "--model", "default", "--new-tokens", "1", "--out", out)
	if err == nil || !strings.Contains(err.Error(), "--new-tokens") || strings.Contains(err.Error(), "\n") {
		t.Errorf("--new-tokens 1: %v, want one line naming the flag", err)
	}
}
