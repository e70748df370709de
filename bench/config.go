package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// Config is everything Run needs.
type Config struct {
	// Artifacts is a prepared directory to benchmark as is. With Model instead, Run
	// prepares it first (into WorkDir) with Prepare's options; sweeps over options that
	// change the graph (bits, recompute, targets) need Model, or an artifacts directory
	// whose manifest names a source model that still exists.
	Artifacts string          `json:"artifacts,omitempty"`
	Model     string          `json:"model,omitempty"`
	Prepare   prepare.Options `json:"prepare"`
	// Recompute is the base point's recomputation policy: "none", "selective", "layer", or
	// "auto"/"" (none on the CPU; on CUDA with Artifacts, as `ortq train` chooses: the
	// fastest policy whose estimated peak fits MaxGPUMemory, train.ChooseRecompute; layer
	// when the graphs are prepared by the run).
	Recompute string `json:"recompute,omitempty"`
	// MaxGPUMemory is auto's budget in bytes (0: 90% of the device's free memory).
	MaxGPUMemory float64 `json:"max_gpu_memory,omitempty"`
	// Base is train's --base for every point whose recompute names a policy alone:
	// train.BaseAuto ("" too: dense where it fits, on one GPU's device or graph step),
	// BaseFourBit or BaseDense. A point's recompute may also name a dense step itself
	// (e.g. selective_dense), which --sweep recompute=layer,layer_dense compares.
	Base string `json:"base,omitempty"`
	// Step is the base point's optimizer step: train.StepHost, StepDevice, StepGraph, or
	// "auto"/"" (train.AutoStep: StepGraph on one CUDA device, else StepHost).
	Step string `json:"step,omitempty"`
	// Preset, instead of Model or Artifacts, synthesizes a random-weight Llama of that
	// shape first (hfimport.Synth, as `ortq synth`): PresetLayers cuts the decoder (0: all),
	// PresetDType is "float16"/"float32" ("": synth's default).
	Preset       string `json:"preset,omitempty"`
	PresetLayers int    `json:"preset_layers,omitempty"`
	PresetDType  string `json:"preset_dtype,omitempty"`

	Device      string  `json:"device"`
	Threads     int     `json:"threads,omitempty"` // CPU intra-op threads (0: ORT's choice)
	MicroBatch  int     `json:"micro_batch"`
	SeqLen      int     `json:"seq_len"`
	Warmup      int     `json:"warmup"`
	Steps       int     `json:"steps"`
	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"weight_decay"`
	Seed        uint64  `json:"seed"`
	// EvalBatches > 0 measures eval perplexity on that many held-out micro-batches of the
	// same synthetic stream before and after the point's steps.
	EvalBatches int    `json:"eval_batches,omitempty"`
	Sweep       []Axis `json:"sweep,omitempty"`
	// PeakFLOPS overrides the GPU's dense fp16 peak for MFU (0: from the GPU's name).
	PeakFLOPS float64 `json:"peak_flops,omitempty"`
	// SampleInterval is the memory monitor's period (0: 10 ms).
	SampleInterval time.Duration `json:"sample_interval_ns,omitempty"`
	// ProfileDir, when set, turns ONNX Runtime's profiler on for the training session of
	// every point (<dir>/<point>_<date>.json); timings then include its overhead.
	ProfileDir string `json:"profile_dir,omitempty"`
	// Session holds the session settings every point starts from (ortq's ORTQX_* knobs:
	// profiler prefix, verbose logging, ortrun.Tuning); each point sets Device,
	// IntraOpThreads and BatchTokens, and ProfileDir its profiler prefix.
	Session ortrun.Options `json:"-"`
	// NoShareWeights is train.EngineOptions.NoShareWeights for every point.
	NoShareWeights bool `json:"-"`
	// WorkDir holds artifacts prepared per point ("": a temp dir, removed afterwards).
	WorkDir string `json:"-"`
	// Logf receives progress lines (nil: silent).
	Logf func(format string, a ...any) `json:"-"`
}

// DefaultConfig is issue 3's workload on the CPU: micro-batch 7 × 512, warm-up 3, 8
// measured steps, prepare's defaults (4-bit, LoRA r=8 α=32 on q_proj,v_proj).
func DefaultConfig() Config {
	return Config{Prepare: prepare.DefaultOptions(), Device: "cpu", MicroBatch: 7, SeqLen: 512, Warmup: 3, Steps: 8,
		LR: 2e-4, WeightDecay: 0.01, Seed: 42}
}

// Validate checks ranges, naming the flag at fault.
func (c *Config) Validate() error {
	switch {
	case c.Artifacts == "" && c.Model == "" && c.Preset == "":
		return fmt.Errorf("give --model (a Llama ONNX graph to prepare), --preset (a random-weight Llama to synthesize) or --artifacts (a prepared directory)")
	case (c.Artifacts != "") && (c.Model != "") || (c.Artifacts != "" || c.Model != "") && c.Preset != "":
		return fmt.Errorf("give one of --model, --preset and --artifacts, not several")
	case c.MicroBatch <= 0:
		return fmt.Errorf("--micro-batch %d: must be positive", c.MicroBatch)
	case c.SeqLen < 2:
		return fmt.Errorf("--seq-len %d: must be at least 2 (the loss predicts token t+1 from t)", c.SeqLen)
	case c.Warmup < 0:
		return fmt.Errorf("--warmup %d: must be ≥ 0", c.Warmup)
	case c.Steps <= 0:
		return fmt.Errorf("--steps %d: must be positive", c.Steps)
	case c.EvalBatches < 0:
		return fmt.Errorf("--eval-batches %d: must be ≥ 0", c.EvalBatches)
	case c.PeakFLOPS < 0:
		return fmt.Errorf("--peak-flops %g: must be ≥ 0", c.PeakFLOPS)
	}
	if c.Recompute != "" && c.Recompute != "auto" {
		if err := checkRecompute(c.Recompute); err != nil {
			return fmt.Errorf("--recompute: %w", err)
		}
	}
	if _, err := train.ParseBase(c.Base); err != nil {
		return fmt.Errorf("--%w", err)
	}
	if _, err := devices(c.Device); err != nil {
		return err
	}
	if err := checkStep(c.Step, true); err != nil {
		return fmt.Errorf("--step: %w", err)
	}
	seen := map[string]bool{}
	for _, a := range c.Sweep {
		if seen[a.Name] {
			return fmt.Errorf("--sweep %s given twice: list all its values in one --sweep", a.Name)
		}
		seen[a.Name] = true
	}
	return nil
}

// Axis is one --sweep option and its values.
type Axis struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

// SweepNames are the options --sweep accepts.
var SweepNames = []string{"micro-batch", "seq-len", "bits", "recompute", "targets", "step"}

// ParseSweep parses --sweep values ("micro-batch=1,7,14"). Items without "=" continue the
// previous option's values, so flag layers that split on commas (viper reads a string
// array back as CSV) give the same result as one string. targets values are lists joined
// with "+" (targets=q_proj+v_proj,all); "all" is every decoder Linear.
func ParseSweep(items []string) ([]Axis, error) {
	var axes []Axis
	for _, it := range items {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		name, vals, ok := strings.Cut(it, "=")
		if !ok {
			if len(axes) == 0 {
				return nil, fmt.Errorf("--sweep %q: want OPTION=V1,V2,… with OPTION one of %s", it, strings.Join(SweepNames, ", "))
			}
			vals, name = it, ""
		} else {
			name = strings.TrimSpace(name)
			name = strings.ReplaceAll(name, "_", "-")
			if !slices.Contains(SweepNames, name) {
				return nil, fmt.Errorf("--sweep %q: unknown option %q: sweep one of %s", it, name, strings.Join(SweepNames, ", "))
			}
			for _, a := range axes {
				if a.Name == name {
					return nil, fmt.Errorf("--sweep %s given twice: list all its values in one --sweep", name)
				}
			}
			axes = append(axes, Axis{Name: name})
		}
		a := &axes[len(axes)-1]
		for _, v := range strings.Split(vals, ",") {
			if v = strings.TrimSpace(v); v == "" {
				continue
			}
			if err := checkAxisValue(a.Name, v); err != nil {
				return nil, fmt.Errorf("--sweep %s=%s: %w", a.Name, v, err)
			}
			a.Values = append(a.Values, v)
		}
	}
	for _, a := range axes {
		if len(a.Values) == 0 {
			return nil, fmt.Errorf("--sweep %s: no values", a.Name)
		}
	}
	return axes, nil
}

func checkAxisValue(name, v string) error {
	switch name {
	case "micro-batch", "seq-len":
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || (name == "seq-len" && n < 2) {
			return fmt.Errorf("not a positive integer")
		}
	case "bits":
		if v != "4" && v != "16" {
			return fmt.Errorf("bits are 4 or 16")
		}
	case "recompute":
		return checkRecompute(v)
	case "targets":
		_, err := parseTargets(v)
		return err
	}
	return nil
}

func parseTargets(v string) ([]string, error) {
	if v == "all" {
		return slices.Clone(passes.Kinds), nil
	}
	var out []string
	for _, t := range strings.Split(v, "+") {
		t = strings.TrimSpace(t)
		if !slices.Contains(passes.Kinds, t) && t != "lm_head" {
			return nil, fmt.Errorf("unknown target %q: use %s or lm_head, joined with +", t, strings.Join(passes.Kinds, ", "))
		}
		out = append(out, t)
	}
	return out, nil
}

// checkRecompute accepts what the training graphs offer: prepare writes train.onnx and
// train_recompute.onnx (each decoder layer recomputed before its backward) side by side,
// and a device step per policy, with and without a dense base (manifest.DenseStep), so
// recompute is chosen per point without preparing again.
func checkRecompute(v string) error {
	switch p, _ := manifest.SplitStepKey(v); p {
	case "none", "layer", "selective":
		return nil
	}
	return fmt.Errorf("recompute %q: use none, selective or layer (or one of them with _dense: the device step with a dense base)", v)
}

// checkStep accepts the optimizer steps a point can use ("auto" and "" only as the base's).
func checkStep(v string, base bool) error {
	if k, err := train.ParseStepKind(v); err != nil || k == train.StepAuto && !base {
		return fmt.Errorf("step %q: use host, device or graph", v)
	}
	return nil
}

// resolveStep turns the base point's "auto" into a step for its devices (train.AutoStep;
// train.ChooseStep then refuses a device step the artifacts lack).
func resolveStep(step string, devs []string) train.StepKind {
	if k, _ := train.ParseStepKind(step); k != train.StepAuto {
		return k
	}
	return train.AutoStep(devs)
}

// expand returns the cartesian product of the axes applied to base, first axis outermost.
func expand(base Params, axes []Axis) ([]Params, error) {
	pts := []Params{base}
	for _, a := range axes {
		var next []Params
		for _, p := range pts {
			for _, v := range a.Values {
				q := p
				q.Targets = slices.Clone(p.Targets)
				switch a.Name {
				case "micro-batch":
					q.MicroBatch, _ = strconv.Atoi(v)
				case "seq-len":
					q.SeqLen, _ = strconv.Atoi(v)
				case "bits":
					q.Bits, _ = strconv.Atoi(v)
				case "recompute":
					q.Recompute = v
				case "step":
					if err := checkStep(v, false); err != nil {
						return nil, fmt.Errorf("--sweep step: %w", err)
					}
					q.Step = train.StepKind(v)
				case "targets":
					t, err := parseTargets(v)
					if err != nil {
						return nil, err
					}
					q.Targets = t
				default:
					return nil, fmt.Errorf("--sweep: unknown option %q", a.Name)
				}
				next = append(next, q)
			}
		}
		pts = next
	}
	return pts, nil
}

// graphKey identifies the prepared artifacts a point needs (recompute is not part of it:
// both training graphs are in every artifacts directory).
func (p Params) graphKey() string {
	return fmt.Sprintf("bits=%d targets=%s", p.Bits, joinComma(p.Targets))
}
