package manifest

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ortq/ortq/internal/fsutil"
)

// FormatVersion is bumped whenever the artifacts layout changes incompatibly.
// 2: the device step clips the gradient norm (step_scalars gained max_grad_norm, stats the
// norm).
const FormatVersion = 2

// File names inside an artifacts directory.
const (
	ManifestFile = "manifest.json"
	TrainFile    = "train.onnx"
	// TrainRecomputeFile is the training graph with per-layer recomputation.
	TrainRecomputeFile = "train_recompute.onnx"
	// TrainStepFile is the recomputing training graph as a device-resident step: LoRA
	// weights, AdamW moments, accumulated gradients and loss statistics enter and leave it as
	// flat fp32 state vectors (StepLayout), so they can stay in GPU memory between runs.
	TrainStepFile = "train_step.onnx"
	EvalFile      = "eval.onnx"
	WeightsFile   = "weights.bin"
	LoRAInitFile  = "lora_init.safetensors"
)

// Recomputation policies of the device step, cheapest in memory first: RecomputeLayer
// recomputes every activation of each decoder layer in the backward pass (TrainStep),
// RecomputeSelective recomputes a layer's norms, rotary, attention and activation functions
// but keeps its Linears' products (no GEMM runs twice), RecomputeNone keeps everything.
const (
	RecomputeLayer     = "layer"
	RecomputeSelective = "selective"
	RecomputeNone      = "none"
)

// RecomputePolicies lists the policies in that order.
var RecomputePolicies = []string{RecomputeLayer, RecomputeSelective, RecomputeNone}

// DenseStep is the StepPolicies key of a policy's device step with a dense base: every
// 4-bit weight read through one dequantization of its initializers, which ONNX Runtime folds
// into a float16 initializer when the session is created (passes.DenseBase; the session
// needs the config entry DenseSessionConfig). Faster than the 4-bit step, it holds the
// base in 16 bits (DenseExtraBytes more).
func DenseStep(policy string) string { return policy + denseSuffix }

const denseSuffix = "_dense"

// SplitStepKey splits a device step key (a policy or a DenseStep) into its policy and
// whether the base is dense.
func SplitStepKey(key string) (policy string, dense bool) {
	if p, ok := strings.CutSuffix(key, denseSuffix); ok {
		return p, true
	}
	return key, false
}

// DenseSessionConfig is the ONNX Runtime session config entry a dense step's session needs
// so that its dequantizations of initializers are folded (QDQ handling keeps them otherwise).
var DenseSessionConfig = map[string]string{"session.disable_quant_qdq": "1"}

// DenseExtraBytes is how many more bytes of device memory a dense step's weights take than
// the 4-bit step's: each quantized Linear as float16 (2 bytes an element) instead of half a
// byte an element and a float16 scale per block (QuantBlockSize; 32, prepare's default, in
// artifacts that do not record it).
func (m *Manifest) DenseExtraBytes() float64 {
	block := float64(m.QuantBlockSize)
	if block <= 0 {
		block = 32
	}
	var b float64
	for _, q := range m.Quant {
		b += float64(q.Shape[0]) * float64(q.Shape[1]) * (2 - 0.5 - 2/block)
	}
	return b
}

// StepFile is the device step graph's file name for a recomputation policy (or a
// DenseStep key).
func StepFile(policy string) string {
	if policy == RecomputeLayer {
		return TrainStepFile
	}
	return "train_step_" + policy + ".onnx"
}

// Step returns the device step graph of a recomputation policy, or nil when the artifacts
// have none.
func (m *Manifest) Step(policy string) *Graph {
	if policy == RecomputeLayer {
		return m.TrainStep
	}
	return m.StepPolicies[policy]
}

// AttentionMaskDocumentIDs is Manifest.AttentionMask for graphs whose attention_mask holds
// document ids (passes.DocMask).
const AttentionMaskDocumentIDs = "document_ids"

// DocumentIDs reports whether the graphs take document ids in attention_mask.
func (m *Manifest) DocumentIDs() bool { return m.AttentionMask == AttentionMaskDocumentIDs }

// Roles of graph inputs and outputs.
const (
	RoleInputIDs      = "input_ids"
	RoleAttentionMask = "attention_mask"
	RolePositionIDs   = "position_ids"
	RoleLabels        = "labels"
	RoleLossScale     = "loss_scale"
	RoleDropoutSeed   = "dropout_seed"
	// RoleDropoutRows is the int32 [batch, seq] input of LoRA dropout row factors,
	// DropoutRowFactors(seed, batch·seq) for the run's dropout seed.
	RoleDropoutRows = "dropout_rows"
	RoleLoRA        = "lora_param"
	RoleLoss        = "loss"
	RoleLossSum     = "loss_sum"
	RoleTokenCount  = "token_count"
	RoleGrad        = "grad"
	// RoleStepScalars is the device step's float32 vector of per-run scalars (StepScalar*).
	RoleStepScalars = "step_scalars"
	// RoleState and RoleStateNext are the device step's state vectors before and after the
	// run; IO.Param names which (StateParams, ...).
	RoleState     = "state"
	RoleStateNext = "state_next"
)

// The device step's state vectors (IO.Param of RoleState/RoleStateNext inputs and outputs).
// All are float32; params, exp_avg, exp_avg_sq and grad_sum have StepLayout's total size.
const (
	StateParams   = "params"     // the LoRA weights, flat in StepLayout order
	StateExpAvg   = "exp_avg"    // AdamW's first moment
	StateExpAvgSq = "exp_avg_sq" // AdamW's second moment
	StateGradSum  = "grad_sum"   // gradients accumulated over the optimizer step's micro-batches
	// StateStats is [loss sum, token count, non-finite flag, gradient norm] of the
	// micro-batches accumulated so far; the flag (1 or 0) and the norm (the unscaled
	// accumulated gradients' L2 norm, before clipping) are those of the latest run, which
	// means something on the run that applies the update.
	StateStats = "stats"
	// StatsLen is the length of the StateStats vector.
	StatsLen = 4
)

// Indices into the device step's step_scalars input. The trainer computes them on the host in
// float64 and rounds them to float32 once, as torch does with Python scalars.
const (
	// StepScalarSeed seeds the backward: loss scale ÷ the optimizer step's counted tokens,
	// so the accumulated gradient is that of the mean loss times the loss scale.
	StepScalarSeed = iota
	// StepScalarKeep is 0 on an optimizer step's first micro-batch (the accumulators
	// restart) and 1 on the others.
	StepScalarKeep
	// StepScalarApply is 1 on the last micro-batch: the run unscales the accumulated
	// gradients and, when they are all finite, applies AdamW.
	StepScalarApply
	StepScalarInvScale // 1 / loss scale
	StepScalarDecay    // 1 − lr·weight_decay
	StepScalarW1       // 1 − β1 (the lerp weight of exp_avg)
	StepScalarBeta2    // β2
	StepScalarC2       // 1 − β2
	StepScalarNegStep  // −lr / (1 − β1^t)
	StepScalarBC2Sqrt  // √(1 − β2^t)
	StepScalarEps      // ε
	// StepScalarMaxNorm is the gradient clipping threshold (torch's clip_grad_norm_
	// max_norm); +Inf turns clipping off.
	StepScalarMaxNorm
	StepScalars // the vector's length
)

// FlatParam places one LoRA tensor in the device step's flat state vectors.
type FlatParam struct {
	Name   string `json:"name"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
}

// IO is one graph input or output.
type IO struct {
	Name  string   `json:"name"`
	Role  string   `json:"role"`
	DType string   `json:"dtype"`
	Shape []string `json:"shape"`
	// Param names the LoRA tensor a gradient belongs to.
	Param string `json:"param,omitempty"`
}

// Graph describes one graph file.
type Graph struct {
	File    string `json:"file"`
	Inputs  []IO   `json:"inputs"`
	Outputs []IO   `json:"outputs"`
	Nodes   int    `json:"nodes"`
	// CaptureBlockers are the graph's ops whose CUDA kernels a CUDA graph cannot replay
	// safely (set for the device step; the trainer then runs it without CUDA graphs).
	CaptureBlockers []string `json:"capture_blockers,omitempty"`
	// SharedInitializers are groups of initializers that name the same bytes (a 4-bit
	// weight as MatMulNBits' uint8 tensor and as DequantizeLinear's UINT4 view, the device
	// step's default): a session may be given one buffer for each group.
	SharedInitializers [][]string `json:"shared_initializers,omitempty"`
}

// Manifest is manifest.json. Options records prepare's options as given.
type Manifest struct {
	Format  int    `json:"format"`
	Source  Source `json:"source"`
	Options any    `json:"options"`
	Model   Model  `json:"model"`
	Train   Graph  `json:"train"`
	// TrainRecompute is the training graph that recomputes each decoder layer's
	// activations in the backward pass (absent when prepare could not build it).
	TrainRecompute *Graph `json:"train_recompute,omitempty"`
	// TrainStep is TrainRecompute as a device-resident step (TrainStepFile), and StepLayout
	// where each LoRA tensor lies in its flat state vectors; both absent in artifacts
	// prepared before ortq built it.
	TrainStep  *Graph      `json:"train_step,omitempty"`
	StepLayout []FlatParam `json:"step_layout,omitempty"`
	// StepPolicies are device steps with other recomputation policies than TrainStep's
	// (every activation of every layer recomputed, RecomputeLayer), keyed by policy; each
	// has TrainStep's inputs, outputs and StepLayout. Absent in artifacts prepared before.
	StepPolicies map[string]*Graph `json:"step_policies,omitempty"`
	Eval         Graph             `json:"eval"`
	// AttentionMask says what every graph's attention_mask input holds:
	// AttentionMaskDocumentIDs (document ids, 0 = padding, and position_ids restarting per
	// document: packed documents do not attend to each other), or "" — a 0/1 padding mask,
	// all prepare made before ortq packed documents apart, or a graph DocMask could not
	// rewrite (train then packs by plain concatenation only).
	AttentionMask string `json:"attention_mask,omitempty"`
	Weights       string `json:"weights"`
	// DataFiles records the size and SHA-256 of every external data file the graphs
	// share (weights.bin), so a truncated or damaged copy is refused naming the file
	// (absent in manifests written before ortq recorded them: those files go unchecked).
	DataFiles []DataFile `json:"data_files,omitempty"`
	// LoRAInit is the safetensors file with the initial LoRA values (PEFT names).
	LoRAInit string       `json:"lora_init"`
	Params   []LoRAParam  `json:"lora_params"`
	Counts   Counts       `json:"counts"`
	Quant    []QuantLayer `json:"quantization,omitempty"`
	// QuantType is the base's 4-bit data type: QuantInt4 (MatMulNBits; also what an empty
	// value in artifacts prepared before ortq recorded it means), QuantNF4 or QuantFP4
	// (MatMulBnb4, bitsandbytes' tables); "" for a 16-bit base. QuantBlockSize is the block
	// size, QuantDoubleQuant whether NF4/FP4 absmax values are stored in 8 bits.
	QuantType        string `json:"quant_type,omitempty"`
	QuantBlockSize   int    `json:"quant_block_size,omitempty"`
	QuantDoubleQuant bool   `json:"quant_double_quant,omitempty"`
}

// The 4-bit data types of Manifest.QuantType.
const (
	QuantInt4 = "int4"
	QuantNF4  = "nf4"
	QuantFP4  = "fp4"
)

// DropoutSeedModulus bounds the training graph's dropout_seed input: the graph builds its
// LoRA dropout masks from small hashes modulo this prime (ortgraph/passes/dropout.go), so a
// caller feeds its seed reduced modulo DropoutSeedModulus, a value in [0, DropoutSeedModulus).
// It is the largest prime below 2^29, so that a product of two residues stays below 2^63 in
// int64 arithmetic and eight times a residue, offset by −2^31, fits in int32. Changing it
// changes every mask: it is part of the artifacts contract like FormatVersion.
const DropoutSeedModulus = 536870909

// LoRAParam is one trainable LoRA tensor, a graph input named as in PEFT's state dict.
type LoRAParam struct {
	Name   string  `json:"name"`
	Module string  `json:"module"`
	Kind   string  `json:"kind"` // "A" [r, in] or "B" [out, r]
	Shape  []int64 `json:"shape"`
}

// QuantLayer records one quantized Linear and its error.
type QuantLayer struct {
	Module string  `json:"module"`
	Shape  [2]int  `json:"shape"` // [out, in]
	RMS    float64 `json:"rms_error"`
	RelRMS float64 `json:"rel_rms_error"`
	MaxAbs float64 `json:"max_abs_error"`
	// Prequantized: the source graph held this Linear as 4-bit already, so there is no
	// full-precision weight to measure the error against (the error fields are 0).
	Prequantized bool `json:"prequantized,omitempty"`
	// Scales and Weights name the graph initializers the quantize pass wrote (its result
	// carries them for later passes; they are not part of manifest.json).
	Scales  string `json:"-"`
	Weights string `json:"-"`
}

// Source identifies the input graph.
type Source struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Opset  int64  `json:"opset"`
}

// Model holds what prepare learned about the architecture.
type Model struct {
	Layers    int    `json:"layers"`
	Hidden    int64  `json:"hidden"`
	Vocab     int64  `json:"vocab"`
	Linears   int    `json:"linears"`
	FoundBy   string `json:"linears_found_by"`
	Precision string `json:"precision"`
	// MaxPositions is max_position_embeddings from a config.json beside the source graph,
	// else from its metadata (0 when neither has it): train refuses --max-seq-len beyond it.
	MaxPositions int `json:"max_positions,omitempty"`
	// KeptMaskBytes is what the recomputing training graphs keep from the first forward
	// besides the layer inputs, in bytes a token: the LoRA dropout masks with prepare
	// --keep-dropout-masks (one byte a masked input element of every layer: an input
	// shared by several targets once with --share-dropout-masks), else 0.
	KeptMaskBytes int64 `json:"kept_mask_bytes,omitempty"`
	// KeptProductBytes is what the per-layer recomputing training graph keeps of the Linear
	// products of the first forward, in bytes a token: the k_proj and v_proj outputs of
	// every layer with prepare --keep-kv, else 0.
	KeptProductBytes int64 `json:"kept_product_bytes,omitempty"`
}

// Counts are parameter counts.
type Counts struct {
	BaseParams      int64 `json:"base_params"`
	QuantizedParams int64 `json:"quantized_params"`
	LoRAParams      int64 `json:"lora_params"`
}

// ReadManifest loads dir/manifest.json and checks its format version.
func ReadManifest(dir string) (*Manifest, error) {
	p := filepath.Join(dir, ManifestFile)
	b, err := fsutil.ReadLimited(p, ManifestFile, 16<<20)
	if err != nil {
		return nil, fmt.Errorf("artifacts %q: %w (run `ortq prepare` first)", dir, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: not a valid manifest: %w", p, err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("%s: format %d, this ortq reads format %d: rerun `ortq prepare`", p, m.Format, FormatVersion)
	}
	if err := m.checkFields(); err != nil {
		return nil, fmt.Errorf("%s: %w: rerun `ortq prepare` (the manifest was edited or damaged)", p, err)
	}
	// A stat per data file: every command that opens artifacts refuses a truncated or
	// replaced weights.bin here, before ONNX Runtime reads it.
	if err := m.CheckSizes(dir); err != nil {
		return nil, err
	}
	return &m, nil
}

// checkFields refuses what a tampered manifest could point elsewhere or make meaningless:
// file names outside the artifacts directory, a LoRA rank or α that is not positive,
// LoRA tensors that are not 2-D with positive dimensions.
func (m *Manifest) checkFields() error {
	files := map[string]string{"lora_init": m.LoRAInit, "weights": m.Weights, "train.file": m.Train.File, "eval.file": m.Eval.File}
	for _, g := range []*Graph{m.TrainRecompute, m.TrainStep} {
		if g != nil {
			files["graph "+g.File] = g.File
		}
	}
	for k, g := range m.StepPolicies {
		if g != nil {
			files["step_policies."+k] = g.File
		}
	}
	for field, f := range files {
		if f != "" && (!filepath.IsLocal(f) || f != filepath.Base(f)) {
			return fmt.Errorf("%s %q is not a file of the artifacts directory", field, f)
		}
	}
	if o, ok := m.Options.(map[string]any); ok {
		for _, k := range []string{"lora_r", "lora_alpha"} {
			if v, ok := o[k].(float64); ok && !(v > 0) {
				return fmt.Errorf("options.%s %v: must be > 0", k, v)
			}
		}
	}
	for _, p := range m.Params {
		if len(p.Shape) != 2 || p.Shape[0] <= 0 || p.Shape[1] <= 0 {
			return fmt.Errorf("lora_params %q: shape %v, want two positive dimensions", p.Name, p.Shape)
		}
	}
	return nil
}

// Input returns the input with a role ("" when absent).
func (g *Graph) Input(role string) string {
	for _, io := range g.Inputs {
		if io.Role == role {
			return io.Name
		}
	}
	return ""
}
