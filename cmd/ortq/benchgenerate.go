package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/bench"
	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/prepare"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

func newBenchGenerate() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate --model EXPORT_DIR|default [--device cuda] [--batch N] --out DIR",
		Short: "Measure generation speed (prefill and decode tokens/s, time to first token, per-token latency, peak GPU memory)",
		Long: `bench generate decodes --batch seeded random prompts of --prompt-tokens ids together, greedy,
--new-tokens new tokens each (EOS ignored), --warmup times unmeasured and --runs times
measured, through a model written by ortq export (--model default: the embedded default
model, prepared and exported with --kv-cache shared into a temporary directory). It reports
prefill tokens/s, time to first token (the prefill, the first new token of every row
included), decode tokens/s (all rows), per-token latency p50/p95 (one decode step), the
batch size and peak GPU memory (NVML, as bench measures training), and writes report.json
(bench's schema, one point with a "generate" object), report.md and memory.jsonl to --out.
--peer adds results of scripts/hf_generate_bench.py (transformers' generate on the same
shape) beside them, with ortq ÷ peer ratios.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := options(cmd)
			if err != nil {
				return err
			}
			return runBenchGenerate(v)
		},
	}
	f := cmd.Flags()
	f.String("model", "", `directory written by ortq export ("default": the embedded default model, exported now)`)
	f.String("device", "cpu", "execution provider: cpu, cuda or cuda:N")
	f.Int("threads", 0, "CPU intra-op threads (0: one per core)")
	f.Int("batch", 1, "prompts decoded together")
	f.Int("prompt-tokens", 128, "tokens per prompt")
	f.Int("new-tokens", 256, "new tokens per prompt")
	f.Int("warmup", 1, "unmeasured generations first")
	f.Int("runs", 3, "measured generations")
	f.Uint64("seed", 42, "seed of the prompts' ids")
	f.Bool("cuda-graph", true, "on CUDA, capture the decode step of a shared-KV-cache export in a CUDA graph")
	f.Int("sample-ms", 10, "memory sampling period in milliseconds")
	f.StringSlice("peer", nil, "peer result JSON (scripts/hf_generate_bench.py --out) to show beside ortq's (repeatable)")
	f.String("out", "bench-generate-out", "directory for report.json, report.md and memory.jsonl")
	f.Bool("quiet", false, "no table on standard output")
	return cmd
}

func runBenchGenerate(v *viper.Viper) error {
	c := bench.GenerateConfig{Model: v.GetString("model"), Device: v.GetString("device"), Threads: v.GetInt("threads"),
		Batch: v.GetInt("batch"), PromptTokens: v.GetInt("prompt-tokens"), NewTokens: v.GetInt("new-tokens"),
		Warmup: v.GetInt("warmup"), Runs: v.GetInt("runs"), Seed: v.GetUint64("seed"), CUDAGraph: v.GetBool("cuda-graph"), SampleMS: v.GetInt("sample-ms")}
	if err := c.Validate(); err != nil {
		return usageError{err}
	}
	var peers bench.Peers
	for _, p := range v.GetStringSlice("peer") {
		r, err := bench.ReadResult(p)
		if err != nil {
			return fmt.Errorf("--peer: %w", err)
		}
		peers = append(peers, r)
	}
	var err error
	if c.Session, err = sessionOptions(v); err != nil {
		return err
	}
	if c.Model == defaultmodel.Name {
		tmp, err := os.MkdirTemp("", "ortq-bench-generate-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if c.Model, err = exportDefault(tmp); err != nil {
			return err
		}
	}
	out := v.GetString("out")
	lock, err := fsutil.LockDir(out) // one writer per --out; creates it
	if err != nil {
		return err
	}
	defer lock.Release()
	res, err := bench.RunGenerate(c)
	if err != nil {
		return err
	}
	if err := res.WriteJSON(filepath.Join(out, "report.json")); err != nil {
		return err
	}
	if err := bench.WriteTimeline(filepath.Join(out, "memory.jsonl"), res.Timeline); err != nil {
		return err
	}
	if err := bench.WriteGenerateMarkdown(filepath.Join(out, "report.md"), res, peers); err != nil {
		return err
	}
	if !v.GetBool("quiet") {
		fmt.Print(bench.GenerateSummary(res, peers))
		fmt.Printf("report: %s (report.json, memory.jsonl)\n", filepath.Join(out, "report.md"))
	}
	return nil
}

// exportDefault prepares the embedded default model and exports it with a shared KV cache
// under dir, returning the export's directory.
func exportDefault(dir string) (string, error) {
	model, _, err := defaultmodel.Extract(defaultmodel.Dir())
	if err != nil {
		return "", err
	}
	o := prepare.DefaultOptions()
	o.Model, o.Out = model, filepath.Join(dir, "artifacts")
	if _, err := prepare.Run(o, nil); err != nil {
		return "", err
	}
	ex := filepath.Join(dir, "export")
	_, err = export.Run(export.Options{Artifacts: o.Out, Out: ex, KVCache: export.KVShared})
	return ex, err
}
