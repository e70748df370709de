package train

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train/optim"
)

// Config is everything `ortq train` decides before the loop starts.
type Config struct {
	Artifacts   string  `json:"artifacts"`
	Out         string  `json:"out"`
	Device      string  `json:"device"`
	MicroBatch  int     `json:"micro_batch"`
	GradAccum   int     `json:"grad_accum"`
	Epochs      float64 `json:"epochs"`
	MaxSteps    int     `json:"max_steps"`
	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"weight_decay"`
	Schedule    string  `json:"schedule"`
	Warmup      int     `json:"warmup_steps"`
	// MaxGradNorm clips the gradients' global L2 norm before each AdamW step (0: off).
	MaxGradNorm float64 `json:"max_grad_norm"`
	EvalEvery   int     `json:"eval_every"`
	// MaxEvalBatches caps each evaluation (0 = the whole eval split).
	MaxEvalBatches int    `json:"max_eval_batches"`
	PadMultiple    int    `json:"pad_multiple"`
	Seed           uint64 `json:"seed"`
	// FP16 enables dynamic loss scaling (GradScaler); fp32 graphs train unscaled.
	FP16 bool `json:"fp16"`
	// SaveEvery writes a checkpoint every N loop steps (0: only at the end and on
	// interruption); Keep is how many step directories stay (0 = all).
	SaveEvery int `json:"save_every"`
	Keep      int `json:"keep"`
	// MaxSkips stops an fp16 run after this many consecutive overflow-skipped steps
	// (0 = DefaultMaxSkips).
	MaxSkips int `json:"max_skips"`
	// Resume continues from a checkpoint directory, or "latest" for the newest under
	// Out/checkpoints ("" = a fresh run, which refuses an Out that has checkpoints).
	Resume string `json:"-"`
	// InitAdapter is a PEFT adapter directory the LoRA weights start from ("" = lora_init).
	InitAdapter string `json:"init_adapter,omitempty"`
	// Data are the options that made the examples, recorded in report.json, where `ortq
	// eval` reads them back to evaluate the run's own eval split.
	Data DataSettings `json:"data"`
	// Inputs are caller-known facts a resume must match (data file hashes, --max-seq-len,
	// tokenizer hash), keyed by the option that sets them.
	Inputs map[string]string `json:"inputs,omitempty"`
	// DataStats describes the dataset for the report: documents, tokens and the labels the
	// loss trains on (fewer than the tokens under prompt masking, TrainOn "completion").
	DataStats *data.Stats `json:"data_stats,omitempty"`
	TrainOn   string      `json:"train_on,omitempty"`
	Quiet     bool        `json:"-"`
	// LogEvery writes a line to Out/run.jsonl every N optimizer steps and at memory peaks
	// (0 = no run log).
	LogEvery int `json:"log_every"`
	// SamplePrompts are completed greedily (Hooks.Sampler) every SampleEvery loop steps (0:
	// only at the end) and at the end, into the progress output, run.jsonl and the report;
	// SampleMaxTokens is how many new tokens each may have.
	SampleEvery     int      `json:"sample_every,omitempty"`
	SamplePrompts   []string `json:"sample_prompts,omitempty"`
	SampleMaxTokens int      `json:"sample_max_tokens,omitempty"`
	// DumpBatches, when set, is a file the run writes every batch it consumes to, with the
	// optimizer settings and each step's loss (batchdump.go), for an outside reference to
	// replay the run exactly; fresh runs only.
	DumpBatches string `json:"dump_batches,omitempty"`

	// Hooks are the run's functions and writers, apart from the hyperparameters above
	// (which report.json records).
	Hooks `json:"-"`
}

// Hooks are what a caller plugs into a run: samplers, the log, the stepper factory and
// test hooks. None of them is recorded in the report.
type Hooks struct {
	// GPUMemory, when set, adds the GPU's memory to the run log; GPUDevices, for a run over
	// several GPUs, every GPU's: the run log's lines and the report then list each device's
	// figure and peak, and the log's GPU figure is the busiest GPU's.
	GPUMemory  func() (used, total uint64, ok bool)
	GPUDevices []GPUSampler
	// Log receives one line per event (evaluations, skipped steps); nil = stderr.
	Log io.Writer

	// Fault-injection hooks for tests (nil in normal runs). GradHook sees the unscaled
	// gradients of each loop step before the finiteness check and may change them.
	GradHook func(step int, grads map[string][]float32)
	// NewStepper, when set, makes the run's Stepper instead of the engine's own
	// (Engine.NewStepper): how a run spreads its micro-batches over several devices, or a
	// test drives the loop without ONNX Runtime.
	NewStepper     func(init []optim.Param, sc StepConfig, rows, seq int) (Stepper, error)
	CheckpointHook CheckpointHook
	// Sampler draws the SamplePrompts' completions (nil: no samples).
	Sampler Sampler
}

// DataSettings are the data options of a run (the micro-batch, padding and seed are
// Config's own).
type DataSettings struct {
	Files     []string `json:"files,omitempty"`
	EvalData  []string `json:"eval_data,omitempty"` // a separate validation set, evaluated whole
	MaxSeqLen int      `json:"max_seq_len"`
	// Pack is how documents share rows: "isolated" (no attention across documents),
	// "concat" (joined with EOS under one causal mask) or "none" (one document per row).
	Pack         string  `json:"pack"`
	EvalFraction float64 `json:"eval_fraction"`
}

// DefaultMaxSkips is Config.MaxSkips's default.
const DefaultMaxSkips = 10

// InterruptedError is what Run returns when ctx is cancelled (SIGINT/SIGTERM): the
// current optimizer step was abandoned and the state after Step saved to Checkpoint.
type InterruptedError struct {
	Step       int
	Checkpoint string
	Cause      error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted at step %d (%v); checkpoint %s", e.Step, e.Cause, e.Checkpoint)
}

func (e *InterruptedError) Unwrap() error { return e.Cause }

// Run is the fine-tuning loop on an ONNX Runtime engine: Trainer.Run with e as the
// backend.
func Run(ctx context.Context, e *Engine, trainSet, evalSet []data.Example, cfg Config) (*Report, error) {
	t := &Trainer{Backend: e, Train: trainSet, Eval: evalSet, Config: cfg}
	return t.Run(ctx)
}

func allFinite(grads map[string][]float32) bool {
	for _, g := range grads {
		for _, v := range g {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return false
			}
		}
	}
	return true
}

// LoadParams reads LoRA values (PEFT names) from a safetensors file and checks them
// against the manifest.
func LoadParams(path string, man *manifest.Manifest) ([]optim.Param, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v, err := man.AdapterValues(path, f)
	if err != nil {
		return nil, err
	}
	out := make([]optim.Param, 0, len(man.Params))
	for _, p := range man.Params {
		out = append(out, optim.Param{Name: p.Name, Data: v[p.Name]})
	}
	return out, nil
}

// SaveAdapter writes the trained LoRA tensors as PEFT does: adapter_model.safetensors
// (names without the adapter name, fp32) and adapter_config.json.
func SaveAdapter(dir string, man *manifest.Manifest, params []optim.Param) error {
	shapes := map[string][]int64{}
	for _, p := range man.Params {
		shapes[p.Name] = p.Shape
	}
	ts := make([]safetensors.Tensor, 0, len(params))
	for _, p := range params {
		ts = append(ts, safetensors.F32Tensor(p.Name, shapes[p.Name], p.Data))
	}
	if err := safetensors.Write(filepath.Join(dir, "adapter_model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return writeAdapterConfig(filepath.Join(dir, "adapter_config.json"), man)
}

// microSeed is the LoRA dropout seed of micro-batch k of optimizer step `step`: a function
// of the run's seed and that position only, so a resumed run draws the masks the
// uninterrupted run drew.
func microSeed(seed uint64, step, k int) uint64 {
	return rand.New(rand.NewPCG(seed, uint64(step)<<32|uint64(k))).Uint64()
}

// stepConfig is the Stepper configuration of a run: torch's AdamW with the run's learning
// rate and weight decay, gradient clipping, and dynamic loss scaling for fp16.
func (cfg Config) stepConfig() StepConfig {
	sc := StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.DefaultGradScalerConfig(), GradHook: cfg.GradHook}
	sc.AdamW.LR, sc.AdamW.WeightDecay = cfg.LR, cfg.WeightDecay
	sc.Scaler.Disabled = !cfg.FP16
	sc.MaxGradNorm = cfg.MaxGradNorm
	return sc
}

// maxBatchSeq is the longest batch the examples make under opts (data.MakeBatch's length).
func maxBatchSeq(examples []data.Example, opts data.BatchOptions) int {
	n := 2
	for _, e := range examples {
		n = max(n, len(e))
	}
	return opts.PaddedLen(n)
}

// inManifestOrder returns values' tensors in the order of order (the manifest's), so that
// checkpoints and adapters list them alike whichever stepper produced them.
func inManifestOrder(order, values []optim.Param) []optim.Param {
	by := make(map[string]optim.Param, len(values))
	for _, p := range values {
		by[p.Name] = p
	}
	out := make([]optim.Param, 0, len(order))
	for _, p := range order {
		if v, ok := by[p.Name]; ok {
			out = append(out, v)
		}
	}
	return out
}
