package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dustin/go-humanize"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/ortq/ortq/chat"
	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/tokenize"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

func newTrain() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "train --artifacts DIR --data FILE... --tokenizer tokenizer.json",
		Short: "Fine-tune the LoRA adapters of prepared artifacts; report perplexity before and after",
		Long: `train tokenizes the data (plain text files: one document per file; records in JSONL,
JSON, CSV, TSV or Parquet: "text", "prompt"/"completion", Alpaca "instruction"/"input"/"output",
or chat "messages" rendered with the tokenizer's chat template, the prompt's labels masked
under --train-on completion), packs it into --max-seq-len blocks (--pack isolated, the default:
no token attends to another document, positions restart at 0 for each document and a
document's first token is not a label of the one before; --pack concat: joined by EOS under
one causal mask; --pack none: one example per line), holds out a seeded 10 % eval split (or
evaluates --eval-data), measures the baseline eval
perplexity, trains with AdamW and token-weighted gradient accumulation, evaluates again and
writes the adapter (adapter_model.safetensors, adapter_config.json, PEFT names) and a run
report (report.json, report.md) to --out.

Checkpoints (LoRA weights, optimizer moments, loss scale, data position, counters) go to
<out>/checkpoints/step-N every --save-every steps, at the end, and on SIGINT/SIGTERM, which
stop the run at the next micro-batch and exit 0 (a second signal exits at once, status 130).
--resume latest continues exactly where the newest checkpoint left off; it refuses other
artifacts, data or trajectory options, naming the one that differs. It may run to another
total (a larger --max-steps or --epochs trains longer): the learning rate of every step after
the checkpoint is then the schedule of the new total at that step, as Hugging Face Trainer
does when it resumes with a larger max_steps (linear and cosine decay continue on the longer
curve, so the rate steps up at the resume; warmup is unchanged). LoRA dropout masks are a
function of --seed, the step and the micro-batch, so a resumed run draws the masks the
uninterrupted run drew and, on the CPU, reproduces it bit for bit.

--sample-prompt TEXT (repeatable) completes each prompt greedily with the adapter as it
stands every --sample-every steps and at the end (through the chat template when the data is
chat "messages", as generate --chat renders a prompt), printed, written to run.jsonl and kept
in the report; the decoder is an export of the artifacts with the LoRA tensors as inputs,
written once into a hidden directory in --out and removed at the end.

weights.bin is refused before anything runs when its size differs from the one manifest.json
records, and when its SHA-256 does: the hash is read the first time train uses an artifacts
directory whose weights.bin changed since it was last verified (prepare records the file it
wrote as verified, in <artifacts>/.verified; a write, a truncation or a copy elsewhere makes it
hashed again). Hashing costs about 0.8 s per GB on one core (measured: 1.6 ms for the default
model's 1.9 MB weights.bin); ` + "`ortq verify`" + ` hashes on demand.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := options(cmd)
			if err != nil {
				return err
			}
			return runTrain(v)
		},
	}
	f := cmd.Flags()
	f.String("artifacts", "", "artifacts directory written by ortq prepare")
	f.StringSlice("data", nil, "training data, repeatable: .txt (one document per file), records in .jsonl/.json/.csv/.tsv/.parquet (text, "+
		"prompt/completion, Alpaca instruction/input/output, or chat messages); other extensions are refused")
	f.String("tokenizer", "", "Hugging Face tokenizer.json (tokenizer_config.json beside it is read for BOS/EOS); \"default\": the embedded default model's")
	f.String("out", "", "run directory for the adapter and the report (default: <artifacts>/run)")
	addDataFlags(f)
	f.Int("micro-batch", 7, "sequences per micro-batch")
	f.Int("grad-accum", 1, "micro-batches per optimizer step (token-weighted)")
	f.Float64("epochs", 1, "passes over the training split (ignored with --max-steps)")
	f.Int("max-steps", 0, "optimizer steps to run (0: from --epochs)")
	f.Float64("lr", 2e-4, "AdamW learning rate")
	f.Float64("weight-decay", 0.01, "AdamW decoupled weight decay (≥ 0)")
	setMin(f, "weight-decay", "0")
	f.Float64("max-grad-norm", optim.DefaultMaxGradNorm, "clip the global L2 norm of the LoRA gradients (after unscaling and accumulation) to this "+
		"before each AdamW step, as torch's clip_grad_norm_ and Hugging Face Trainer's max_grad_norm (0: no clipping); the norm before clipping is logged "+
		"as grad norm")
	f.String("schedule", "linear", "learning-rate schedule after warmup: linear, cosine or constant")
	f.Int("warmup-steps", 0, "linear warmup steps")
	f.Int("eval-every", 0, "evaluate every N optimizer steps (0: only before and after)")
	f.Int("max-eval-batches", 0, "cap each evaluation at N micro-batches (0: the whole eval split)")
	addRuntimeFlags(f)
	f.Int("threads", 0, "CPU intra-op threads (0: one per core)")
	addLogFlags(f)
	addReliabilityFlags(f)
	addSampleFlags(f)
	addDistFlags(f)
	return cmd
}

// addLogFlags adds train's flags for what a run reports as it goes: progress, the run log
// and the batch dump.
func addLogFlags(f *pflag.FlagSet) {
	f.Bool("quiet", false, "no progress bar")
	f.Int("log-every", 10, "append host/system/GPU memory and progress to <out>/run.jsonl every N steps and at memory peaks (0: off)")
	f.String("dump-batches", "", "write FILE (JSON lines): the optimizer settings, every eval batch and every training micro-batch as the "+
		"loop handed it to the step (input_ids, labels, attention_mask, position_ids), each step's loss, grad norm and lr, and each eval's "+
		"result, so that an outside reference can replay the run (scripts/peft_loss_curve.py); fresh runs only; about 15 bytes a training token")
}

// addReliabilityFlags adds train's flags for checkpoints, resuming and stopping.
func addReliabilityFlags(f *pflag.FlagSet) {
	f.Int("save-every", 50, "write a checkpoint to <out>/checkpoints every N optimizer steps (0: only at the end and when interrupted)")
	f.Int("keep", 3, "checkpoints to keep (0: all)")
	f.String("init-adapter", "", "PEFT adapter directory (adapter_config.json + adapter_model.safetensors) to start from instead of lora_init; its r, "+
		"alpha, targets and shapes must match the artifacts")
	f.String("resume", "", "continue an interrupted or finished run: \"latest\" (newest checkpoint under --out) or a checkpoint directory; artifacts, "+
		"data and options must be the earlier run's, except the total (--max-steps, --epochs): a larger one trains longer, with the schedule of the new total")
	f.Bool("force", false, "start afresh even though --out holds an earlier run's checkpoints or finished adapter and report (they are deleted)")
	f.Int("max-skips", train.DefaultMaxSkips, "with fp16, stop after N consecutive steps skipped for non-finite gradients")
}

// addRuntimeFlags adds train's flags for where and how the step runs: devices,
// recomputation, the base's form, the optimizer step and its memory budget.
func addRuntimeFlags(f *pflag.FlagSet) {
	f.String("device", "cpu", "execution provider: cpu, cuda or cuda:N; several GPUs of this host train data-parallel: cuda:0,cuda:1 or cuda:all "+
		"(cpu,cpu: CPU sessions standing in for GPUs, for testing)")
	f.String("recompute", "auto", "activation recomputation in the backward pass: layer (every activation of each decoder layer), selective (a layer's "+
		"norms, rotary, attention and activation functions, not its Linears' GEMMs; device step only), none, or auto (none on the CPU; on one GPU the "+
		"fastest policy whose estimated peak fits --max-gpu-memory; layer over several GPUs)")
	f.String("max-gpu-memory", "", "GPU memory --recompute auto and --base auto may plan for, e.g. 13.7GiB or 14000MiB (default: 90% of the device's free memory)")
	f.String("base", train.BaseAuto, "the frozen base on a one-GPU device or graph step: 4bit (dequantized on every product), dense (dequantized once at "+
		"load and held in float16: faster, +1.5 bytes a weight) or auto (dense where the estimated peak fits --max-gpu-memory, chosen with --recompute "+
		"auto's policy); 4bit elsewhere")
	f.String("step", "auto", "optimizer step: host (gradients and AdamW in Go memory), device (LoRA weights, AdamW state and gradients stay in the "+
		"session's device memory), graph (device, captured in CUDA graphs where the step graph allows it), or auto (graph on one CUDA device, for the "+
		"recomputation policy the run uses; host otherwise, several devices included)")
}

// recomputeFlag checks --recompute and resolves auto on the CPU (none); on CUDA auto stays
// until the artifacts and the memory budget are known (resolveRecompute).
func recomputeFlag(v, device string) (string, error) {
	switch v {
	case manifest.RecomputeLayer, manifest.RecomputeSelective, manifest.RecomputeNone:
		return v, nil
	case "auto", "":
		if !strings.HasPrefix(device, "cuda") {
			return manifest.RecomputeNone, nil
		}
		return "auto", nil
	}
	return "", usageError{fmt.Errorf("--recompute %q: use layer, selective, none or auto", v)}
}

// maxGPUMemory parses --max-gpu-memory (0 when empty: the default budget).
func maxGPUMemory(v string) (float64, error) {
	if v == "" {
		return 0, nil
	}
	b, err := humanize.ParseBigBytes(v)
	if err != nil || b.Sign() <= 0 {
		return 0, usageError{fmt.Errorf("--max-gpu-memory %q: give a size such as 13.7GiB or 14000MiB", v)}
	}
	f, _ := b.Float64()
	return f, nil
}

// resolveRecompute turns --recompute and --base into a device step once the artifacts are
// read (train.ResolveRecompute: the budget is --max-gpu-memory, else 90% of the device's
// free memory); the note is printed and kept for the run log and the report.
func resolveRecompute(policy, base, step string, devs []string, budget float64, man *manifest.Manifest, rows, seqLen int) (string, string, error) {
	kind, err := train.ParseStepKind(step)
	if err != nil {
		return "", "", usageError{fmt.Errorf("--%w", err)}
	}
	key, note, err := train.ResolveRecompute(man, devs, policy, base, kind, budget, func() uint64 {
		free, err := deviceFree(devs[0])
		if err != nil {
			return 0
		}
		return free
	}, rows, seqLen)
	if err != nil {
		return "", "", usageError{fmt.Errorf("--%w", err)}
	}
	return key, note, nil
}

// addDataFlags adds the flags shared by train and eval for building the dataset.
func addDataFlags(f *pflag.FlagSet) {
	f.Int("max-seq-len", data.DefaultMaxSeqLen, "tokens per packed block (the longest sequence with --pack none); at least 1")
	f.String("pack", packIsolated, "how documents share rows: isolated (packed into --max-seq-len blocks, each document attending only to itself, "+
		"positions from 0), concat (joined with EOS under one causal mask, the seed's packing) or none (one example per line/document)")
	f.Bool("no-pack", false, "one example per line/document (deprecated: --pack none)")
	_ = f.MarkDeprecated("no-pack", "use --pack none")
	f.Float64("eval-fraction", data.DefaultEvalFraction, "share of examples held out for evaluation (0 with --eval-data)")
	f.StringSlice("eval-data", nil, "a separate validation set (.txt or .jsonl), evaluated whole; --data then all trains")
	f.Int("pad-multiple", data.DefaultPadMultiple, "pad each micro-batch's length to a multiple of this")
	f.Uint64("seed", 42, "seed for the split, shuffling and dropout")
	f.String("base-model-name", "", "base_model_name_or_path written to adapter_config.json (default: what prepare recorded, the model given to `ortq prepare`)")
	f.String("text-column", "", "field (JSON) or column (CSV, TSV, Parquet) holding the text of text records (default \"text\")")
	f.String("prompt-column", "", "field or column of the prompt in prompt/completion records (default \"prompt\")")
	f.String("completion-column", "", "field or column of the completion in prompt/completion records (default \"completion\")")
	f.String("chat-template", "", "Jinja chat template file for \"messages\" records (default: the chat_template of tokenizer_config.json beside --tokenizer)")
	f.String("train-on", "completion", "tokens of instruction and chat records the loss learns: completion (the completion or the assistant turns; the "+
		"prompt's labels are -100) or prompt+completion")
}

// readOptions resolves the data-format flags; the chat template is loaded only when the
// tokenizer has one or --chat-template names one (a chat record without one is refused).
func readOptions(v *viper.Viper, tokPath string, linePerDocument bool) (data.ReadOptions, error) {
	o := data.ReadOptions{LinePerDocument: linePerDocument, TextField: v.GetString("text-column"),
		PromptField: v.GetString("prompt-column"), CompletionField: v.GetString("completion-column")}
	var err error
	if o.TrainOn, err = data.ParseTrainOn(v.GetString("train-on")); err != nil {
		return o, usageError{err}
	}
	o.Chat, err = chat.Load(tokPath, v.GetString("chat-template"))
	if errors.Is(err, chat.ErrNoTemplate) {
		return o, nil
	}
	return o, err
}

// dataSummary is the line train prints about the data, trained labels included.
func dataSummary(st data.Stats, trainOn string, nTrain, nEval int) string {
	trained := fmt.Sprintf("%d labels trained", st.TrainLabels+st.EvalLabels)
	if st.Masked {
		trained += fmt.Sprintf(" (--train-on %s: prompt tokens masked)", trainOn)
	}
	line := fmt.Sprintf("data: %d documents, %d tokens, %s → %d train / %d eval examples", st.Documents, st.Tokens, trained, nTrain, nEval)
	if st.DroppedUntrained > 0 {
		line += fmt.Sprintf("; %d examples with nothing to train on dropped", st.DroppedUntrained)
	}
	return line
}

// loadDataset reads, tokenizes and splits the data files (d.Files, which may be empty
// when d.EvalData holds everything to evaluate); d.EvalData, when given, is the eval set,
// whole.
func loadDataset(v *viper.Viper, d train.DataSettings, vocab int64, maxPositions int) (*data.Dataset, error) {
	if err := checkDataFlags(v); err != nil {
		return nil, err
	}
	tokPath, err := resolveTokenizer(v.GetString("tokenizer"))
	if err != nil {
		return nil, err
	}
	if tokPath == "" {
		return nil, usageError{fmt.Errorf("--tokenizer is required")}
	}
	if len(d.Files) == 0 && len(d.EvalData) == 0 {
		return nil, usageError{fmt.Errorf("--data is required")}
	}
	tok, err := tokenize.Load(tokPath)
	if err != nil {
		return nil, err
	}
	if vocab > 0 && int64(tok.VocabSize()) > vocab {
		return nil, fmt.Errorf("tokenizer %q has %d tokens but the model's embedding has %d rows: use the model's own tokenizer", tokPath, tok.VocabSize(), vocab)
	}
	ropts, err := readOptions(v, tokPath, d.Pack == packNone)
	if err != nil {
		return nil, err
	}
	o := buildOptions(d, v.GetUint64("seed"), vocab, maxPositions)
	eos, ok := tok.EOS()
	if !ok {
		return nil, fmt.Errorf("tokenizer %q defines no EOS token: documents cannot be separated", tokPath)
	}
	o.EOS = eos
	if bos, ok := tok.BOS(); ok {
		o.BOS, o.AddBOS = bos, true
	} else {
		o.AddBOS = false
	}
	build := func(files []string, o data.Options) (*data.Dataset, error) {
		docs, err := data.ReadDocuments(files, ropts)
		if err != nil {
			return nil, err
		}
		return data.Build(docs, tok, o)
	}
	ds := &data.Dataset{}
	if len(d.Files) > 0 {
		if ds, err = build(d.Files, o); err != nil {
			return nil, err
		}
	}
	if len(d.EvalData) > 0 {
		o.EvalFraction = 0
		es, err := build(d.EvalData, o)
		if err != nil {
			return nil, fmt.Errorf("--eval-data: %w", err)
		}
		ds.Eval, ds.Stats.EvalTokens, ds.Stats.EvalLabels = es.Train, es.Stats.TrainTokens, es.Stats.TrainLabels
		ds.Stats.Masked = ds.Stats.Masked || es.Stats.Masked
	}
	return ds, nil
}

func sessionOptions(v *viper.Viper) (ortrun.Options, error) {
	lib, err := ortrun.FindLibrary(v.GetString("ort-lib"))
	if err != nil {
		return ortrun.Options{}, err
	}
	if err := ortrun.Init(lib); err != nil {
		return ortrun.Options{}, err
	}
	k, err := knobs()
	if err != nil {
		return ortrun.Options{}, err
	}
	o := ortrun.Options{Device: v.GetString("device"), IntraOpThreads: v.GetInt("threads")}
	applyKnobs(&o, k)
	return o, nil
}

// runTrain is `ortq train`. Signals are handled from the start, so one during loading (ONNX
// Runtime, the tokenizer, the data) is reported instead of killing the process unannounced.
func runTrain(v *viper.Viper) (err error) {
	if launched, err := launchTrain(v); launched { // --nproc-per-node: the ranks do the rest
		return err
	}
	ctx, stop := interruptContext()
	defer stop()
	if startupHook != nil {
		startupHook()
	}
	f, err := trainFlags(v) // every flag, before anything is read, written or opened
	if err != nil {
		return err
	}
	rank, err := distSetup(v, &f) // nil unless a rank of a data-parallel run over processes
	if err != nil {
		return err
	}
	defer func() { err = rank.finish(err) }()
	lock, err := claimOut(f.out, v)
	if err != nil {
		return err
	}
	defer lock.Release()
	engines, err := openTrainEngines(v, &f)
	if err != nil {
		return err
	}
	defer train.CloseEngines(engines)
	if ctx, err = rank.connect(ctx, engines); err != nil {
		return err
	}
	ds, cfg, err := trainConfig(v, f, engines)
	if err != nil {
		return err
	}
	rank.configure(&cfg, engines)
	if s, ok := cfg.Sampler.(*trainSampler); ok {
		defer s.Close()
	}
	if v.GetBool("force") {
		if err := discardEarlierRun(f.out); err != nil {
			return err
		}
	}
	if note := idleDevicesNote(f.devs, cfg.GradAccum); note != "" {
		fmt.Fprintln(os.Stderr, note)
	}
	fmt.Fprintln(os.Stderr, dataSummary(ds.Stats, v.GetString("train-on"), len(ds.Train), len(ds.Eval)))
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted before training started: nothing was trained or checkpointed")
	}
	rep, err := train.Run(ctx, engines[0], ds.Train, ds.Eval, cfg)
	err = rank.cause(err) // another rank's failure is no interruption to resume from
	return trainResult(rep, err, len(ds.Eval), f.out)
}

// trainSetup is what runTrain resolves from the flags before it opens anything.
type trainSetup struct {
	dir, out string
	devs     []string           // one training session per device (devices.go)
	rec      string             // the recomputation policy ("auto" until the artifacts are read), or its dense step
	base     string             // --base
	budget   float64            // --max-gpu-memory (0: the default budget)
	dset     train.DataSettings // the data flags
}

// trainFlags checks every flag of train and resolves those that need nothing read.
func trainFlags(v *viper.Viper) (trainSetup, error) {
	f := trainSetup{dir: v.GetString("artifacts"), out: v.GetString("out")}
	if f.dir == "" {
		return f, usageError{fmt.Errorf("--artifacts is required")}
	}
	if err := checkTrainFlags(v); err != nil {
		return f, err
	}
	if f.out == "" {
		f.out = filepath.Join(f.dir, "run")
	}
	var err error
	if f.devs, err = parseDevices(v.GetString("device")); err != nil {
		return f, err
	}
	if f.rec, err = recomputeFlag(v.GetString("recompute"), f.devs[0]); err != nil {
		return f, err
	}
	if f.budget, err = maxGPUMemory(v.GetString("max-gpu-memory")); err != nil {
		return f, err
	}
	if f.base, err = train.ParseBase(v.GetString("base")); err != nil {
		return f, usageError{fmt.Errorf("--%w", err)}
	}
	if f.dset, err = dataSettings(v); err != nil {
		return f, err
	}
	if f.dset.EvalFraction >= 1 {
		return f, usageError{fmt.Errorf("--eval-fraction 1 holds every example out, leaving nothing to train: pass --eval-data FILE for a separate validation set")}
	}
	if w := warmupWarning(v.GetInt("warmup-steps"), v.GetInt("max-steps")); w != "" {
		fmt.Fprintln(os.Stderr, w)
	}
	return f, nil
}

// claimOut takes --out for this run: one writer per run directory, taken before anything is
// read or written there (an unwritable --out is reported here, before tokenizing and the
// baseline evaluation); an earlier run's unfinished writes go, and a finished run is
// refused unless --resume or --force says what to do with it.
func claimOut(out string, v *viper.Viper) (*fsutil.Lock, error) {
	lock, err := fsutil.LockDir(out)
	if err != nil {
		return nil, err
	}
	if removed, err := fsutil.RemoveStaleTemps(out); err != nil {
		lock.Release()
		return nil, err
	} else if len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "removed %d unfinished write(s) of an earlier run in %s (%s)\n", len(removed), out, strings.Join(removed, ", "))
	}
	if err := checkFinishedRun(out, v.GetString("resume"), v.GetBool("force")); err != nil {
		lock.Release()
		return nil, err
	}
	return lock, nil
}

// openTrainEngines reads the artifacts, resolves --recompute auto and --step, and opens one
// engine per device (train.OpenEngines); f.rec becomes the policy the run uses.
func openTrainEngines(v *viper.Viper, f *trainSetup) ([]*train.Engine, error) {
	opts, err := sessionOptions(v)
	if err != nil {
		return nil, err
	}
	opts.Device = f.devs[0]
	multiDeviceThreads(&opts, f.devs)
	mb, seq := v.GetInt("micro-batch"), v.GetInt("max-seq-len")
	opts.BatchTokens = mb * seq
	// weights.bin's size is checked on every open (manifest.ReadManifest); its SHA-256
	// once per artifacts directory and again only after the file changed.
	man, err := manifest.ReadManifest(f.dir)
	if err != nil {
		return nil, err
	}
	if _, err := man.VerifyHashesOnce(f.dir); err != nil {
		return nil, err
	}
	rec, recNote, err := resolveRecompute(f.rec, f.base, v.GetString("step"), f.devs, f.budget, man, mb, seq)
	if err != nil {
		return nil, err
	}
	f.rec = rec
	eo, err := stepOptions(v.GetString("step"), f.devs, rec, man)
	if err != nil {
		return nil, err
	}
	k, _ := knobs() // sessionOptions checked them
	eo.NoShareWeights = !k.ShareWeights
	engines, err := train.OpenEngines(f.dir, opts, eo, f.devs)
	if err != nil {
		return nil, err
	}
	if recNote != "" {
		engines[0].Notes = append([]string{recNote}, engines[0].Notes...)
	}
	return engines, nil
}

// trainConfig checks the adapter to start from, reads the data, checks memory and makes
// the run's configuration.
func trainConfig(v *viper.Viper, f trainSetup, engines []*train.Engine) (*data.Dataset, train.Config, error) {
	eng := engines[0]
	train.SetBaseModelName(eng.Man, v.GetString("base-model-name"))
	if ia := v.GetString("init-adapter"); ia != "" { // checked before the data is read
		if _, err := train.LoadInitAdapter(ia, eng.Man); err != nil {
			return nil, train.Config{}, err
		}
	}
	if err := checkPack(f.dset, eng.Man, f.dir); err != nil {
		return nil, train.Config{}, err
	}
	ds, err := loadTrainData(v, f, eng.Man)
	if err != nil {
		return nil, train.Config{}, err
	}
	cfg := train.Config{
		Artifacts: f.dir, Out: f.out, Device: strings.Join(f.devs, ","),
		MicroBatch: v.GetInt("micro-batch"), GradAccum: v.GetInt("grad-accum"), Epochs: v.GetFloat64("epochs"),
		MaxSteps: v.GetInt("max-steps"), LR: v.GetFloat64("lr"), WeightDecay: v.GetFloat64("weight-decay"),
		Schedule: v.GetString("schedule"), Warmup: v.GetInt("warmup-steps"), EvalEvery: v.GetInt("eval-every"),
		MaxGradNorm: v.GetFloat64("max-grad-norm"), MaxEvalBatches: v.GetInt("max-eval-batches"),
		PadMultiple: v.GetInt("pad-multiple"), Seed: v.GetUint64("seed"), FP16: eng.Man.Model.Precision == "float16",
		Quiet: v.GetBool("quiet"), LogEvery: v.GetInt("log-every"), DumpBatches: v.GetString("dump-batches"),
		SaveEvery: v.GetInt("save-every"), Keep: v.GetInt("keep"), MaxSkips: v.GetInt("max-skips"),
		Resume: v.GetString("resume"), InitAdapter: v.GetString("init-adapter"), Data: f.dset, DataStats: &ds.Stats,
		Hooks: train.Hooks{NewStepper: runStepper(engines), GPUMemory: gpuMemory(f.devs), GPUDevices: gpuDevices(f.devs), CheckpointHook: checkpointHook},
	}
	if ds.Stats.Masked {
		cfg.TrainOn = v.GetString("train-on")
	}
	if cfg.Inputs, err = resumeInputs(v, f.dset); err != nil {
		return nil, train.Config{}, err
	}
	return ds, cfg, trainSampling(v, f, eng.Man, ds.Stats.Chat, &cfg)
}

// loadTrainData reads, tokenizes and splits the data, refuses splits too short to train or
// evaluate, and checks that a micro-batch fits in memory.
func loadTrainData(v *viper.Viper, f trainSetup, man *manifest.Manifest) (*data.Dataset, error) {
	ds, err := loadDataset(v, f.dset, man.Model.Vocab, man.Model.MaxPositions)
	if err != nil {
		return nil, err
	}
	if len(ds.Train) == 0 {
		return nil, fmt.Errorf("data too short: the training split is empty (%d examples in all): add data or lower --max-seq-len", ds.Stats.Examples)
	}
	if len(ds.Eval) == 0 && f.dset.EvalFraction > 0 {
		return nil, fmt.Errorf("data too short: %d examples leave the eval split empty, so no perplexity can be measured: "+
			"add data, lower --max-seq-len, or pass --eval-fraction 0", ds.Stats.Examples)
	}
	mb, seq := v.GetInt("micro-batch"), v.GetInt("max-seq-len")
	rows := min(mb, max(len(ds.Train), len(ds.Eval)))
	if !strings.HasPrefix(f.devs[0], "cuda") {
		return ds, checkHostMemory(f.dir, man.Model, mb, rows, seq)
	}
	return ds, checkDevicesMemory(f.devs, man.Model, f.rec, mb, rows, seq)
}

// discardEarlierRun is --force: an earlier run's checkpoints and results go, so an
// interrupted new run does not sit beside them.
func discardEarlierRun(out string) error {
	if err := os.RemoveAll(filepath.Join(out, train.CheckpointsDir)); err != nil {
		return err
	}
	for _, f := range finishedRunFiles {
		if err := os.Remove(filepath.Join(out, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// trainResult prints how the run ended: the command that resumes an interrupted run
// (exit 0), or the evaluations and throughput of a finished one.
func trainResult(rep *train.Report, err error, nEval int, out string) error {
	var intr *train.InterruptedError
	if errors.As(err, &intr) {
		fmt.Fprintf(os.Stderr, "interrupted at step %d; resume with: %s\n(checkpoint %s)\n", intr.Step, resumeCommand(os.Args[1:]), intr.Checkpoint)
		return nil
	}
	if err != nil {
		return err
	}
	if nEval == 0 {
		// An empty eval set has no perplexity; the report's NaN fields say so.
		fmt.Println("no eval set (--eval-fraction 0 and no --eval-data): no perplexity measured")
	} else {
		fmt.Printf("baseline eval: loss %.4f, perplexity %.3f\n", float64(rep.Baseline.Loss), float64(rep.Baseline.Perplexity))
		fmt.Printf("final eval:    loss %.4f, perplexity %.3f\n", float64(rep.Final.Loss), float64(rep.Final.Perplexity))
	}
	fmt.Printf("%d optimizer steps, %.0f tokens/s; adapter and report in %s\n", rep.OptimizerSteps, float64(rep.TokensPerSecond), out)
	return nil
}

// checkTrainFlags refuses out-of-range values before anything is read or written.
func checkTrainFlags(v *viper.Viper) error {
	if err := checkDataFlags(v); err != nil {
		return err
	}
	if _, err := parseDevices(v.GetString("device")); err != nil {
		return err
	}
	for _, c := range []struct {
		flag string
		min  int
	}{{"micro-batch", 1}, {"grad-accum", 1}, {"max-steps", 0}, {"warmup-steps", 0}, {"eval-every", 0}, {"max-eval-batches", 0}, {"threads", 0}, {"log-every", 0}} {
		if n := v.GetInt(c.flag); n < c.min {
			return usageError{fmt.Errorf("--%s %d: must be ≥ %d", c.flag, n, c.min)}
		}
	}
	if err := checkStepSize(v.GetInt("micro-batch"), v.GetInt("max-seq-len"), v.GetInt("grad-accum")); err != nil {
		return err
	}
	if ep := v.GetFloat64("epochs"); v.GetInt("max-steps") == 0 && !(ep > 0) {
		return usageError{fmt.Errorf("--epochs %g: must be > 0 (or set --max-steps)", ep)}
	}
	if lr := v.GetFloat64("lr"); !(lr > 0) {
		return usageError{fmt.Errorf("--lr %g: must be > 0", lr)}
	}
	if m := v.GetFloat64("max-grad-norm"); !(m >= 0) || math.IsInf(m, 0) {
		return usageError{fmt.Errorf("--max-grad-norm %g: must be ≥ 0 and finite (0 turns clipping off)", m)}
	}
	if v.GetInt("save-every") < 0 || v.GetInt("keep") < 0 || v.GetInt("max-skips") < 0 {
		return usageError{fmt.Errorf("--save-every, --keep and --max-skips must be ≥ 0")}
	}
	if v.GetBool("force") && v.GetString("resume") != "" {
		return usageError{fmt.Errorf("--force discards checkpoints; it cannot be combined with --resume")}
	}
	if _, err := train.ParseStepKind(v.GetString("step")); err != nil {
		return usageError{fmt.Errorf("--%w", err)}
	}
	return checkSampleFlags(v)
}

// maxStepTokens bounds --grad-accum × --micro-batch × --max-seq-len, checked before anything
// is allocated: an optimizer step's grad-accum batches are built before its first
// micro-batch runs (≈ 0.5 GB of batches at the bound). A micro-batch alone is checked
// against the machine's memory (memory.go).
const maxStepTokens = 1 << 24

// checkStepSize refuses a --grad-accum whose step would pass the bound, naming the flag (a
// micro-batch over the bound on its own is memory.go's to refuse, naming --micro-batch).
func checkStepSize(microBatch, seqLen, gradAccum int) error {
	batch := int64(microBatch) * int64(seqLen)
	if step := batch * int64(gradAccum); gradAccum > maxStepTokens || (gradAccum > 1 && batch <= maxStepTokens && step > maxStepTokens) {
		return usageError{fmt.Errorf("--grad-accum %d × %d tokens a micro-batch = %d tokens an optimizer step: at most %d (the step's batches are built "+
			"before it runs); lower --grad-accum", gradAccum, batch, step, maxStepTokens)}
	}
	return nil
}

// warmupWarning warns when the warmup outlasts the run (--max-steps): the learning rate
// never reaches --lr (the first step trains at lr 0).
func warmupWarning(warmup, maxSteps int) string {
	if maxSteps > 0 && warmup >= maxSteps {
		return fmt.Sprintf("warning: --warmup-steps %d ≥ --max-steps %d: the learning rate never reaches --lr "+
			"(step 1 trains at lr 0); lower --warmup-steps", warmup, maxSteps)
	}
	return ""
}

// checkDataFlags refuses out-of-range values of the dataset flags (train and eval).
func checkDataFlags(v *viper.Viper) error {
	if n := v.GetInt("max-seq-len"); n < 1 {
		return usageError{fmt.Errorf("--max-seq-len %d: must be ≥ 1", n)}
	}
	if n := v.GetInt("pad-multiple"); n < 0 {
		return usageError{fmt.Errorf("--pad-multiple %d: must be ≥ 0", n)}
	}
	if f := v.GetFloat64("eval-fraction"); !(f >= 0 && f <= 1) {
		return usageError{fmt.Errorf("--eval-fraction %g: must be in [0, 1]", f)}
	}
	if _, err := data.ParseTrainOn(v.GetString("train-on")); err != nil {
		return usageError{err}
	}
	return nil
}

// finishedRunFiles are what a finished run leaves in --out besides its checkpoints.
var finishedRunFiles = []string{"adapter_model.safetensors", "adapter_config.json", "report.json", "report.md", "run.jsonl"}

// checkFinishedRun refuses a fresh run into an --out that holds an earlier run's
// results but no checkpoints (with checkpoints, train.Run refuses and offers --resume).
func checkFinishedRun(out, resume string, force bool) error {
	if resume != "" || force {
		return nil
	}
	if exists, _ := pathExists(filepath.Join(out, train.CheckpointsDir)); exists {
		return nil
	}
	for _, f := range finishedRunFiles[:4] {
		p := filepath.Join(out, f)
		if exists, err := pathExists(p); err != nil {
			return err
		} else if exists {
			return fmt.Errorf("--out %q holds a finished run (%s): pass --force to overwrite it, or choose another --out", out, p)
		}
	}
	return nil
}

func pathExists(p string) (bool, error) {
	_, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// startupHook is nil in ortq; a reliability test sets it to signal the process while it
// is still loading.
var startupHook func()

// checkpointHook is nil in ortq; the reliability tests set it in a re-executed child to
// slow or fail checkpoint writes.
var checkpointHook train.CheckpointHook

// exitNow ends the process on a second signal (a variable so the reason is greppable).
var exitNow = os.Exit

// interruptContext is cancelled by the first SIGINT/SIGTERM/SIGHUP, which makes train.Run stop
// at the next micro-batch boundary, write a checkpoint and return; a second signal exits
// at once with status 130 (128+SIGINT, what a shell reports for Ctrl-C), leaving the
// newest complete checkpoint as it is.
func interruptContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	// SIGHUP too: a closed terminal or ssh session checkpoints the run instead of killing it.
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "\nortq: %v: stopping after this optimizer step's current micro-batch and writing a checkpoint; signal again to exit at once\n", s)
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "ortq: second signal (%v): exiting now; the newest complete checkpoint is kept\n", s)
			exitNow(130)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

// resumeCommand is the command line to continue this run: the same arguments without
// --force, with --resume latest.
func resumeCommand(args []string) string {
	out := []string{"ortq"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--resume" {
			i++
			continue
		}
		// --force discards checkpoints and cannot be combined with --resume.
		if strings.HasPrefix(a, "--resume=") || a == "--force" || strings.HasPrefix(a, "--force=") {
			continue
		}
		out = append(out, shellQuote(a))
	}
	return strings.Join(append(out, "--resume", "latest"), " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r == '/' || r == ',' || r == '=' || r == ':' || r == '+' ||
			('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// resumeInputs fingerprints the inputs train.Run cannot see (it gets tokenized
// examples): each data file's size and hash, the tokenizer's hash and the options that
// shape the examples, so a resume with other inputs is refused naming the flag.
func resumeInputs(v *viper.Viper, d train.DataSettings) (map[string]string, error) {
	m := map[string]string{
		"--max-seq-len":   fmt.Sprint(d.MaxSeqLen),
		"--pack":          d.Pack,
		"--eval-fraction": fmt.Sprint(d.EvalFraction),
	}
	files := splitList(v.GetStringSlice("data"))
	m["--data (file count)"] = fmt.Sprint(len(files))
	for i, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		sum, err := train.FileSHA256(f)
		if err != nil {
			return nil, err
		}
		m[fmt.Sprintf("--data[%d] (%s)", i, filepath.Base(f))] = fmt.Sprintf("%d bytes, sha256 %s", st.Size(), sum)
	}
	if tok, err := resolveTokenizer(v.GetString("tokenizer")); err == nil && tok != "" {
		sum, err := train.FileSHA256(tok)
		if err != nil {
			return nil, err
		}
		m["--tokenizer (sha256)"] = sum
	}
	return m, nil
}
