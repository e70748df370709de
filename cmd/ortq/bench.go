package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ortq/ortq/bench"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/prepare"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

func newBench() *cobra.Command {
	d := prepare.DefaultOptions()
	b := bench.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "bench --model M.onnx|--preset NAME|--artifacts DIR [--device cuda] [--sweep OPTION=V1,V2]... [--peer peer.json] --out DIR",
		Short: "Measure fine-tuning speed and memory (tokens/s, step time, peak GPU/host memory, MFU, perplexity)",
		Long: `bench runs optimizer steps (forward + backward + AdamW) on seeded synthetic token batches —
every position a real token — and measures, after --warmup steps, --steps steps: step time
p50/p95, tokens/s, peak GPU memory (NVML, sampled every ~10 ms and at each step), peak host
RSS, MFU against the GPU's dense fp16 peak, and with --eval-batches the eval perplexity before
and after the steps. The model is prepared first (--model, or a random-weight --preset
synthesized like 'ortq synth'), or taken as prepared (--artifacts).

--sweep measures the cartesian product of option values: micro-batch, seq-len, bits, recompute,
targets (lists joined with +, or all), e.g.
  ortq bench --preset llama-3.2-3b --device cuda --sweep micro-batch=1,7,14 --sweep recompute=none,layer --sweep bits=4,16
Options that change the graph (bits, targets) prepare again per value into a temporary directory.

--out gets report.json, report.md, memory.jsonl (the memory timeline) and plots (PNG + SVG).
--peer adds results of bench/peer/torch_peft.py (same JSON schema) to the table, with
ortq/peer ratios. 'ortq bench compare OLD.json NEW.json' is the regression gate; 'ortq bench
generate' measures generation (prefill, decode, time to first token) of an export.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := options(cmd)
			if err != nil {
				return err
			}
			return runBench(v)
		},
	}
	f := cmd.Flags()
	f.String("model", "", `Llama ONNX graph to prepare and measure ("default": the small model embedded in ortq)`)
	f.String("preset", "", "synthesize a random-weight Llama of this shape first ("+strings.Join(hfimport.PresetNames(), ", ")+")")
	f.Int("preset-layers", 0, "with --preset: keep only the first N decoder layers (0: all)")
	f.String("preset-dtype", "", "with --preset: float16 or float32 (default: synth's — float16, float32 for tiny)")
	f.String("artifacts", "", "prepared artifacts directory to measure as is")
	f.String("device", b.Device,
		"execution provider: cpu, cuda or cuda:N; a list (cuda:0,cuda:1, or cuda:all) trains data-parallel, one micro-batch per device per step (cpu,cpu "+
			"stands in for two GPUs)")
	f.Int("threads", 0, "CPU intra-op threads (0: one per core)")
	f.Int("micro-batch", b.MicroBatch, "sequences per step")
	f.Int("seq-len", b.SeqLen, "tokens per sequence")
	f.Int("steps", b.Steps, "measured optimizer steps")
	f.Int("warmup", b.Warmup, "warm-up optimizer steps (not measured)")
	f.Float64("lr", b.LR, "AdamW learning rate")
	f.Uint64("seed", b.Seed, "seed of the token batches (and of --preset's weights)")
	f.Int("eval-batches", 0, "measure eval perplexity on N held-out micro-batches before and after the steps (0: off)")
	f.String("recompute", "auto",
		"recomputation policy: layer, selective (device and graph steps), none, or auto (none on the CPU; with --artifacts on one GPU the fastest policy "+
			"whose estimated peak fits --max-gpu-memory, as train chooses; else layer on CUDA)")
	f.String("max-gpu-memory", "", "GPU memory --recompute auto and --base auto may plan for, e.g. 13.7GiB (default: 90% of the device's free memory)")
	f.String("base", "auto",
		"the frozen base as train's --base, for points whose recompute names a policy alone (4bit, dense or auto); a recompute of POLICY_dense (e.g. "+
			"--sweep recompute=layer,layer_dense) names the dense step itself")
	f.String("step", "auto",
		"optimizer step: host (gradients and AdamW in Go memory), device (kept in the session's device memory), graph (device, captured in CUDA graphs "+
			"where the step graph allows it), or auto (graph on one CUDA device, for the recomputation policy of the point; host otherwise, several devices included)")
	f.StringArray("sweep", nil, "OPTION=V1,V2,… over micro-batch, seq-len, bits, recompute, targets, step (repeatable: cartesian product)")
	f.StringSlice("peer", nil, "peer result JSON (bench/peer/torch_peft.py) to show beside ortq's (repeatable); "+
		"\"torch\" runs that script now, same workload (needs --preset, Python with torch+peft)")
	f.String("peer-script", "bench/peer/torch_peft.py", "the PyTorch+PEFT peer script --peer torch runs")
	f.String("python", "python3", "Python interpreter for --peer torch")
	f.String("out", "bench-out", "directory for report.json, report.md, memory.jsonl and the plots")
	f.Float64("peak-flops", 0, "dense fp16 peak FLOP/s for MFU (0: from the GPU's name: H100 SXM/H200 989e12, H100 PCIe 756e12)")
	f.Int("sample-ms", 10, "memory sampling period in milliseconds")
	f.String("profile", "", "write ONNX Runtime profiles of each point's training session into this directory (timings include the profiler)")
	f.String("work-dir", "", "keep prepared artifacts (and a synthesized --preset model) here instead of a temporary directory")
	addBenchPrepareFlags(f, d)
	f.Bool("quiet", false, "no progress lines")
	cmd.AddCommand(newBenchCompare())
	cmd.AddCommand(newBenchGenerate())
	cmd.AddCommand(newBenchMerge())
	return cmd
}

// benchConfig makes the benchmark's configuration from the flags and checks it.
func benchConfig(v *viper.Viper) (bench.Config, error) {
	cfg := bench.DefaultConfig()
	cfg.Model, cfg.Artifacts, cfg.Preset = v.GetString("model"), v.GetString("artifacts"), v.GetString("preset")
	cfg.PresetLayers, cfg.PresetDType = v.GetInt("preset-layers"), v.GetString("preset-dtype")
	if cfg.Model == defaultmodel.Name {
		m, _, err := defaultmodel.Extract(defaultmodel.Dir())
		if err != nil {
			return cfg, err
		}
		cfg.Model = m
	}
	cfg.Device, cfg.Threads = v.GetString("device"), v.GetInt("threads")
	cfg.MicroBatch, cfg.SeqLen, cfg.Steps, cfg.Warmup = v.GetInt("micro-batch"), v.GetInt("seq-len"), v.GetInt("steps"), v.GetInt("warmup")
	cfg.LR, cfg.Seed, cfg.EvalBatches = v.GetFloat64("lr"), v.GetUint64("seed"), v.GetInt("eval-batches")
	cfg.Recompute, cfg.Step = v.GetString("recompute"), v.GetString("step")
	budget, err := maxGPUMemory(v.GetString("max-gpu-memory"))
	if err != nil {
		return cfg, err
	}
	cfg.MaxGPUMemory = budget
	cfg.Base = v.GetString("base")
	cfg.PeakFLOPS = v.GetFloat64("peak-flops")
	cfg.SampleInterval = time.Duration(v.GetInt("sample-ms")) * time.Millisecond
	cfg.ProfileDir, cfg.WorkDir = v.GetString("profile"), v.GetString("work-dir")
	p := prepare.DefaultOptions()
	p.Targets, p.Rank, p.Alpha = splitList(v.GetStringSlice("targets")), v.GetInt("lora-r"), v.GetFloat64("lora-alpha")
	p.Dropout, p.Bits, p.BlockSize = v.GetFloat64("lora-dropout"), v.GetInt("bits"), v.GetInt("block-size")
	p.Quant, p.DoubleQuant = v.GetString("quant"), v.GetBool("double-quant")
	cfg.Prepare = p
	// viper hands a string array back split at commas; ParseSweep rejoins the pieces.
	if cfg.Sweep, err = bench.ParseSweep(v.GetStringSlice("sweep")); err != nil {
		return cfg, usageError{err}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	if cfg.Model != "" || cfg.Preset != "" {
		o := p
		o.Model, o.Out = "x", "x" // Validate wants them; bench sets both per point
		if err := o.Validate(); err != nil {
			return cfg, usageError{err}
		}
	}
	return cfg, nil
}

func runBench(v *viper.Viper) error {
	cfg, err := benchConfig(v)
	if err != nil {
		return err
	}
	var peers bench.Peers
	runTorch := false
	for _, path := range splitList(v.GetStringSlice("peer")) {
		if path == "torch" {
			runTorch = true
			continue
		}
		r, err := bench.ReadResult(path)
		if err != nil {
			return err
		}
		peers = append(peers, r)
	}
	out := v.GetString("out")
	lock, err := fsutil.LockDir(out) // one writer per --out; creates it
	if err != nil {
		return err
	}
	defer lock.Release()
	if runTorch {
		r, err := runTorchPeer(v, cfg, out)
		if err != nil {
			return err
		}
		peers = append(peers, r)
	}
	if !v.GetBool("quiet") {
		cfg.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	// Load ONNX Runtime from --ort-lib / config as the other commands do.
	// Every point's sessions start from these options (the experiment knobs); the point sets
	// device and threads.
	if cfg.Session, err = sessionOptions(v); err != nil {
		return err
	}
	k, _ := knobs() // sessionOptions checked them
	cfg.NoShareWeights = !k.ShareWeights
	res, err := bench.Run(cfg)
	if err != nil {
		return err
	}
	if err := bench.WriteTimeline(filepath.Join(out, "memory.jsonl"), res.Timeline); err != nil {
		return err
	}
	figs, err := writeBenchReport(out, res, peers)
	if err != nil {
		return err
	}
	fmt.Print(bench.Summary(res, peers))
	fmt.Printf("report: %s (report.json, memory.jsonl", filepath.Join(out, "report.md"))
	if len(figs) > 0 {
		fmt.Printf(", %d plots", len(figs))
	}
	fmt.Println(")")
	return nil
}

// writeBenchReport writes a bench result into out: report.json, the plots and report.md
// (showing peers beside it); it returns the plots' file names.
func writeBenchReport(out string, res *bench.Result, peers bench.Peers) ([]string, error) {
	if err := res.WriteJSON(filepath.Join(out, "report.json")); err != nil {
		return nil, err
	}
	figs, err := bench.WritePlots(out, res, peers)
	if err != nil {
		return nil, err
	}
	return figs, bench.WriteMarkdown(filepath.Join(out, "report.md"), res, bench.MarkdownOptions{Peers: peers, Figures: figs})
}

// addBenchPrepareFlags adds prepare's options, used when bench prepares the model.
func addBenchPrepareFlags(f *pflag.FlagSet, d prepare.Options) {
	f.StringSlice("targets", d.Targets, "LoRA target Linears (when preparing)")
	f.Int("lora-r", d.Rank, "LoRA rank r (when preparing)")
	f.Float64("lora-alpha", d.Alpha, "LoRA alpha (when preparing)")
	f.Float64("lora-dropout", d.Dropout, "LoRA dropout (when preparing)")
	f.Int("bits", d.Bits, "base weights: 4 (MatMulNBits) or 16 (when preparing)")
	f.Int("block-size", d.BlockSize, "4-bit block size (when preparing)")
	f.String("quant", "int4", "4-bit type: int4, nf4 or fp4, as prepare --quant (when preparing)")
	f.Bool("double-quant", false, "nf4/fp4 absmax in 8 bits, as prepare --double-quant (when preparing)")
}

func newBenchCompare() *cobra.Command {
	t := bench.DefaultThresholds()
	cmd := &cobra.Command{
		Use:   "compare OLD.json NEW.json",
		Short: "Print the change between two bench results and fail past thresholds (CI regression gate)",
		Long: `compare matches points by label and prints tokens/s, peak memory (GPU when both measured it,
else host RSS) and final eval perplexity, old → new. It exits with status 1 when throughput
falls by more than --max-slowdown, memory grows by more than --max-memory-growth, final
perplexity rises by more than --max-ppl-increase (fractions), or an old point is missing.
On the CPU, throughput is first scaled by each run's reference_ms (a fixed pure-Go matmul
timed in the same process), so a slower CI machine does not read as a regression.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := options(cmd)
			if err != nil {
				return err
			}
			th := bench.Thresholds{MaxSlowdown: v.GetFloat64("max-slowdown"), MaxMemoryGrowth: v.GetFloat64("max-memory-growth"),
				MaxPPLIncrease: v.GetFloat64("max-ppl-increase"), Normalize: v.GetString("normalize")}
			oldR, err := bench.ReadResult(args[0])
			if err != nil {
				return err
			}
			newR, err := bench.ReadResult(args[1])
			if err != nil {
				return err
			}
			c, err := bench.Compare(oldR, newR, th)
			if err != nil {
				return usageError{err}
			}
			fmt.Print(c.Text())
			if !c.OK() {
				return fmt.Errorf("bench compare: %d regression(s) past the thresholds", len(c.Failures))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Float64("max-slowdown", t.MaxSlowdown, "largest allowed fall in tokens/s (fraction)")
	f.Float64("max-memory-growth", t.MaxMemoryGrowth, "largest allowed growth in peak memory (fraction)")
	f.Float64("max-ppl-increase", t.MaxPPLIncrease, "largest allowed rise in final eval perplexity (fraction)")
	f.String("normalize", t.Normalize, "scale throughput by reference_ms: auto (CPU runs), on or off")
	return cmd
}

// runTorchPeer runs the PyTorch+PEFT peer script on the same workload (preset, micro-batch,
// sequence length, steps, recomputation) and reads its result. Python is only ever used for
// this comparison, never by ortq's own commands.
func runTorchPeer(v *viper.Viper, cfg bench.Config, out string) (*bench.Result, error) {
	if cfg.Preset == "" {
		return nil, usageError{fmt.Errorf("--peer torch needs --preset: the peer script synthesizes the same model shape itself")}
	}
	rec := "layer"
	if r := cfg.Recompute; r == "none" || (r == "auto" && !strings.HasPrefix(cfg.Device, "cuda")) {
		rec = "none"
	}
	path := filepath.Join(out, "peer-torch.json")
	args := []string{v.GetString("peer-script"), "--preset", cfg.Preset, "--micro-batch", strconv.Itoa(cfg.MicroBatch),
		"--seq-len", strconv.Itoa(cfg.SeqLen), "--steps", strconv.Itoa(cfg.Steps), "--warmup", strconv.Itoa(cfg.Warmup),
		"--recompute", rec, "--out", path}
	if cfg.PresetLayers > 0 {
		args = append(args, "--layers", strconv.Itoa(cfg.PresetLayers))
	}
	cmd := exec.Command(v.GetString("python"), args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("--peer torch: %s %s: %w", v.GetString("python"), strings.Join(args, " "), err)
	}
	return bench.ReadResult(path)
}
