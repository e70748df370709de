package prepare

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/quantize"
	"google.golang.org/protobuf/proto"
)

// Options of `ortq prepare`.
type Options struct {
	Model      string   `json:"model"`
	Out        string   `json:"-"`
	Force      bool     `json:"-"`
	Targets    []string `json:"targets"`
	Rank       int      `json:"lora_r"`
	Alpha      float64  `json:"lora_alpha"`
	Dropout    float64  `json:"lora_dropout"`
	Bits       int      `json:"bits"`
	BlockSize  int      `json:"block_size"`
	Asymmetric bool     `json:"asymmetric"`
	// Quant is the 4-bit type: int4 ("" too), nf4 or fp4; DoubleQuant 8-bit absmax (nf4/fp4).
	Quant          string `json:"quant,omitempty"`
	DoubleQuant    bool   `json:"double_quant,omitempty"`
	QuantizeLMHead bool   `json:"quantize_lm_head"`
	Seed           uint64 `json:"seed"`
	// LossChunks: blocks of the sequence the chunked lm_head+loss computes one after the
	// other (0 = plain loss on the whole logits, -1 = automatic: passes.AutoLossChunks when
	// the vocabulary exceeds passes.AutoLossChunksAbove entries).
	LossChunks int `json:"loss_chunks"`
	// DequantizeForward keeps the device step's forward products of int4 Linears as
	// DequantizeLinear + MatMul. By default they become MatMulNBits (passes.NBitsForward),
	// whose dequantization is faster, and the manifest lists the initializer pairs naming the
	// same bytes, which train gives the session as one buffer. With an NF4/FP4 base it turns
	// the step's MatMulBnb4 products into in-graph dequantization + FusedMatMul
	// (passes.Bnb4Forward), so that the step can be captured in CUDA graphs.
	DequantizeForward bool `json:"dequantize_forward,omitempty"`
	// AttentionForward (on by default) writes each attention of the recomputing training
	// graphs' first forward — whose scores and probabilities the backward pass does not
	// read, as it reads the recomputed ones — as one fused node (3B shape, micro-batch 7,
	// H100: 190.1 against 194.6 ms a step with MultiHeadAttention). The eval graph keeps
	// the decomposed attention, which export rewrites for decoding.
	AttentionForward bool `json:"attention_forward"`
	// AttentionKernel is the node AttentionForward writes: "mha" (the default,
	// com.microsoft.MultiHeadAttention, passes.AttentionForwardMHA) or "attention" (the
	// opset-23 Attention, passes.AttentionForward: 212.4 against 213.3 ms).
	AttentionKernel string `json:"attention_kernel,omitempty"`
	// KeepDropoutMasks (on by default) makes the recomputing training graphs keep the LoRA
	// dropout masks of the first forward (passes.RecomputeOptions.KeepMasks): one byte a
	// masked input element (hidden a token and layer with LoRA on q and v sharing a mask,
	// 0.29 GiB at the 3B shape, micro-batch 7 × 512; 2·hidden, 0.57 GiB, with a mask per
	// target) for two int32 kernels fewer a mask in each layer's recomputation (H100, masks
	// per target: 183.2 against 186.9 ms a step, and 190.3 against 193.5).
	KeepDropoutMasks bool `json:"keep_dropout_masks"`
	// ShareDropoutMasks (on by default) draws one LoRA dropout mask per input instead of one
	// per target (passes.LoRAOptions.ShareDropoutMasks): q_proj and v_proj of a layer see the
	// same dropped elements — each still a dropout of rate p, as PEFT's, but PEFT draws the
	// two independently — and their A products run as one GEMM (without dropout they always
	// do). H100, 3B shape, micro-batch 7: 174.6 against 178.65 ms a step, 0.42 GiB less.
	ShareDropoutMasks bool `json:"share_dropout_masks"`
	// KeepKV (on by default) makes the per-layer recomputing training graph keep the k_proj
	// and v_proj products of the first forward (passes.RecomputeOptions.KeepKinds): 2·(k and
	// v widths) bytes a token and layer for two GEMMs and v's LoRA product fewer in each
	// layer's recomputation. H100, 3B shape, micro-batch 7: 171.0 against 172.35 ms a step,
	// 0.34 GiB more at the peak.
	KeepKV bool `json:"keep_kv"`
	// FusedKernels (on by default) lets the training graphs use ortq's own ops (package
	// kernels: a CPU and a CUDA kernel each): the float16 SwiGLU gradient as one SwiGLUGrad
	// node instead of eight elementwise ones a layer (H100, 3B shape, micro-batch 7: 159.35
	// against 170.1 ms a step) and, last on every training graph (lastPasses), the
	// activation as one SwiGLU node (passes.SwiGLUForward).
	FusedKernels bool `json:"fused_kernels"`
	// AttentionKernels (on by default) runs passes.RotaryKernel and passes.MaskedSoftmax last
	// on every training graph (lastPasses): the float16 rotary embeddings as ortq's Rotary
	// kernel and the recomputed attention's mask Add + Softmax as one MaskedSoftmax (H100, 3B
	// shape, micro-batch 7, one call: 153.3 → 145.4 ms a step).
	AttentionKernels bool `json:"attention_kernels"`
	// NormKernels (on by default) runs passes.RMSNormKernel and passes.NormGradSum last on
	// every training graph (lastPasses): the recomputed float16 RMSNorms as ortq's RMSNorm
	// kernel, and each RMSNormGrad (FusedNormGrad) adding the residual stream's other
	// gradient itself instead of a separate Sum (H100, 3B shape, micro-batch 7, one call:
	// 141.2 → 139.0 ms a step).
	NormKernels bool `json:"norm_kernels"`
	// Bnb4Kernel (off by default: not measured on a GPU yet) runs passes.Bnb4Kernel last on
	// every training graph: a float16 NF4/FP4 base's dequantization chains that the 4-bit
	// steps run (dx's, and the forward products' with --dequantize-forward) as one
	// DequantBnb4 kernel each.
	Bnb4Kernel bool `json:"bnb4_kernel,omitempty"`
	// FusedNormGrad (on by default) makes the float16 RMSNorm gradient one RMSNormGrad node
	// of ortq's domain (package kernels) where the norm's inv_std_var is saved, instead of
	// six elementwise kernels and a GEMV a norm (H100, 3B shape, micro-batch 7, one call:
	// 159.1 → 153.5 ms a step).
	FusedNormGrad bool `json:"fused_norm_grad,omitempty"`
	// FoldScales (on by default) runs passes.ScaleMatMul last on every training graph
	// (lastPasses): a scalar Mul read only by GEMMs (attention's scaled score gradient, read
	// by the dQ and dK GEMMs), or of a GEMM's sole product, becomes their alpha. Measured only
	// together with SwiGLUForward: 159.35 → 157.65 ms a step (H100, two calls apart).
	FoldScales bool `json:"fold_scales"`
	// FuseResidualNorm (on by default) runs passes.ResidualNorm on the recomputing training
	// graphs: each first-forward residual Add and the RMSNorm it feeds as one kernel (H100:
	// 189.55 against 190.3 ms a step).
	FuseResidualNorm bool `json:"fuse_residual_norm"`
	// PlainMask skips passes.DocMask: attention_mask stays the model's 0/1 padding mask,
	// the graphs lack the document-id comparison, and train packs by plain concatenation.
	PlainMask bool `json:"plain_mask,omitempty"`
	// GenericSoftmaxGrad skips passes.AttentionGrad: attention's softmax gradient stays the
	// generic rule (row sums over the scores). An A/B switch for measurements.
	GenericSoftmaxGrad bool `json:"generic_softmax_grad,omitempty"`
	// BaseModel is the model as the user named it (a checkpoint directory or an .onnx
	// path), which adapter_config.json records: Model may be a temporary import.
	BaseModel string `json:"base_model_name_or_path,omitempty"`
}

// trainPasses are the passes that make a training graph of the quantized base, up to its
// backward pass (Recompute follows for the recomputing graphs).
func (o *Options) trainPasses() []*ortgraph.Pass {
	ps := []*ortgraph.Pass{passes.DQForward, passes.LoRA, passes.Loss, passes.Backward}
	if !o.GenericSoftmaxGrad {
		ps = append(ps, passes.AttentionGrad)
	}
	return ps
}

// keptKinds are the Linear kinds whose products the per-layer recomputing graph keeps.
func (o *Options) keptKinds() []string {
	if o.KeepKV {
		return []string{"k_proj", "v_proj"}
	}
	return nil
}

// DefaultOptions are the reference recipe's settings.
func DefaultOptions() Options {
	return Options{Targets: []string{"q_proj", "v_proj"}, Rank: 8, Alpha: 32, Dropout: 0.1, Bits: 4, BlockSize: 32, Seed: 42, LossChunks: -1,
		AttentionForward: true, KeepDropoutMasks: true, FuseResidualNorm: true, ShareDropoutMasks: true, KeepKV: true,
		FusedKernels: true, FusedNormGrad: true, AttentionKernels: true, NormKernels: true, FoldScales: true}
}

// Validate checks option ranges, naming the flag at fault.
func (o *Options) Validate() error {
	if o.Model == "" {
		return fmt.Errorf("--model is required")
	}
	if o.Out == "" {
		return fmt.Errorf("--out is required")
	}
	if o.Rank <= 0 || o.Rank > 4096 {
		return fmt.Errorf("--lora-r %d: must be in 1..4096", o.Rank)
	}
	if o.Alpha <= 0 || math.IsNaN(o.Alpha) {
		return fmt.Errorf("--lora-alpha %g: must be positive", o.Alpha)
	}
	if o.Dropout < 0 || o.Dropout >= 1 {
		return fmt.Errorf("--lora-dropout %g: must be in [0, 1)", o.Dropout)
	}
	if o.Bits != 4 && o.Bits != 16 {
		return fmt.Errorf("--bits %d: use 4 (4-bit base) or 16 (unquantized base)", o.Bits)
	}
	if err := o.validateQuant(); err != nil {
		return err
	}
	if o.LossChunks < -1 || o.LossChunks > 1024 {
		return fmt.Errorf("--loss-chunks %d: use a number of blocks in 1..1024, 0 (off) or -1 (automatic)", o.LossChunks)
	}
	if k := o.AttentionKernel; k != "" && k != "attention" && k != "mha" {
		return fmt.Errorf("--attention-kernel %q: use mha (com.microsoft.MultiHeadAttention) or attention (opset-23 Attention)", k)
	}
	if len(o.Targets) == 0 {
		return fmt.Errorf("--targets is empty: name at least one of %s", strings.Join(passes.Kinds, ","))
	}
	return nil
}

// firstForwardPasses are the rewrites of the recomputing training graphs' first forward,
// whose internals the backward pass does not read (it reads their recomputation):
// --attention-forward's fused attention (by --attention-kernel) and --fuse-residual-norm.
func (o *Options) firstForwardPasses() []*ortgraph.Pass {
	var ps []*ortgraph.Pass
	switch {
	case o.AttentionForward && o.AttentionKernel == "attention":
		ps = append(ps, passes.AttentionForward)
	case o.AttentionForward:
		ps = append(ps, passes.AttentionForwardMHA)
	}
	if o.FuseResidualNorm {
		ps = append(ps, passes.ResidualNorm)
	}
	return ps
}

// lastPasses are the rewrites of every finished training graph, the host's and the device
// steps' alike (so that the two compute the same): SwiGLUForward with --fused-kernels,
// RotaryKernel and MaskedSoftmax with --attention-kernels, RMSNormKernel and NormGradSum
// with --norm-kernels, Bnb4Kernel with --bnb4-kernel, ScaleMatMul with --fold-scales.
func (o *Options) lastPasses() []*ortgraph.Pass {
	var ps []*ortgraph.Pass
	if o.FusedKernels {
		ps = append(ps, passes.SwiGLUForward)
	}
	if o.AttentionKernels {
		ps = append(ps, passes.RotaryKernel, passes.MaskedSoftmax)
	}
	if o.NormKernels {
		ps = append(ps, passes.RMSNormKernel, passes.NormGradSum)
	}
	if o.Bnb4Kernel {
		ps = append(ps, passes.Bnb4Kernel)
	}
	if o.FoldScales {
		ps = append(ps, passes.ScaleMatMul)
	}
	return ps
}

// quantOptions is the quantization the options ask for.
func (o *Options) quantOptions() quantize.Options {
	return quantize.Options{BlockSize: o.BlockSize, Asymmetric: o.Asymmetric, Type: quantize.Type(strings.ToLower(o.Quant)), DoubleQuant: o.DoubleQuant}
}

// validateQuant checks --quant, --block-size, --asymmetric, --double-quant and their
// combinations with --bits and --dequantize-forward.
func (o *Options) validateQuant() error {
	q := o.quantOptions()
	if err := (quantize.Options{BlockSize: q.BlockSize}).Validate(); err != nil {
		return fmt.Errorf("--block-size: %w", err)
	}
	if q.Type != "" && q.Type != quantize.Int4 && !q.Type.IsBnb4() {
		return fmt.Errorf("--quant %q: use int4, nf4 or fp4", o.Quant)
	}
	switch {
	case q.Type.IsBnb4() && o.Bits != 4:
		return fmt.Errorf("--quant %s needs --bits 4", q.Type)
	case q.Type.IsBnb4() && o.Asymmetric:
		return fmt.Errorf("--asymmetric with --quant %s: zero points are int4's (nf4 and fp4 are symmetric tables)", q.Type)
	case o.DoubleQuant && !q.Type.IsBnb4():
		return fmt.Errorf("--double-quant needs --quant nf4 or fp4 (it compresses their absmax values)")
	}
	return nil
}

// passOptions are the options of the passes that take any, for a graph with this dropout
// that is (train) or is not a training graph, of a model with this vocabulary, recomputed
// by rec where the Recompute pass runs.
func (o *Options) passOptions(dropout float64, train bool, vocab int64, rec passes.RecomputeOptions) ortgraph.Options {
	chunks := o.LossChunks
	if chunks < 0 {
		chunks = 0
		if vocab > passes.AutoLossChunksAbove {
			chunks = passes.AutoLossChunks
		}
	}
	return ortgraph.Options{
		passes.Quantize: passes.QuantizeOptions{
			Bits:   o.Bits,
			Quant:  o.quantOptions(),
			LMHead: o.QuantizeLMHead,
		},
		passes.LoRA:      passes.LoRAOptions{Targets: o.Targets, Rank: o.Rank, Alpha: o.Alpha, Dropout: dropout, ShareDropoutMasks: o.ShareDropoutMasks},
		passes.Loss:      passes.LossOptions{Chunks: chunks, Train: train, LMHeadLoRA: slices.Contains(o.Targets, "lm_head")},
		passes.Backward:  passes.BackwardOptions{FusedKernels: train && o.FusedKernels, FusedNormGrad: train && o.FusedNormGrad},
		passes.Recompute: rec,
	}
}

// Result summarises a prepare run.
type Result struct {
	Manifest *manifest.Manifest
	Linears  *passes.Linears
}

// Inspect loads a model and finds its Linears (for --list-targets).
func Inspect(path string) (*passes.Linears, error) {
	m, err := ortgraph.Load(path)
	if err != nil {
		return nil, err
	}
	if err := checkSupported(m); err != nil {
		return nil, err
	}
	g := ortgraph.NewGraph(m)
	ctx, err := ortgraph.RunPasses(g, nil, nil, passes.FindLinears)
	if err != nil {
		return nil, err
	}
	return ortgraph.ResultOf[*passes.Linears](ctx, passes.FindLinears), nil
}

// checkSupported refuses graphs ortq cannot train, with a reason.
func checkSupported(m *ortgraph.Model) error {
	g := m.P.Graph
	for _, in := range g.Input {
		n := strings.ToLower(in.Name)
		if strings.Contains(n, "past_key") || strings.Contains(n, "past_value") || strings.HasPrefix(n, "past.") {
			return fmt.Errorf("model %q: input %q is a KV cache: export without cache (use_cache=False)", m.Path, in.Name)
		}
	}
	hasIDs := false
	for _, in := range g.Input {
		if in.Name == "input_ids" {
			hasIDs = true
		}
	}
	if !hasIDs {
		return fmt.Errorf("model %q: no input named \"input_ids\": not a decoder-only language model graph", m.Path)
	}
	if len(m.P.Functions) > 0 {
		return fmt.Errorf("model %q: graphs with local functions are not supported: inline them (onnx.inliner) first", m.Path)
	}
	return nil
}

// Run performs `ortq prepare`: it checks the options and the output directory, loads the
// model, builds the graphs, describes them in the manifest and writes the artifacts.
func Run(o Options, logf func(string, ...any)) (*Result, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := checkOut(o); err != nil {
		return nil, err
	}
	m, srcOpset, err := loadModel(o.Model)
	if err != nil {
		return nil, err
	}
	gs, err := buildGraphs(o, m, logf)
	if err != nil {
		return nil, err
	}
	man := buildManifest(o, m, srcOpset, gs)
	if err := writeArtifacts(o, man, gs); err != nil {
		return nil, err
	}
	return &Result{Manifest: man, Linears: gs.linears}, nil
}

// checkOut refuses an output that exists, unless --force is given and it is a directory
// that holds artifacts (and nothing else) or nothing (fsutil.CheckReplace).
func checkOut(o Options) error {
	return fsutil.CheckReplace(o.Out, o.Force, manifest.ManifestFile, "prepare")
}

// loadModel loads a supported model and returns it with its source opset, raised to opset
// 21 and IR version 10: DequantizeLinear with UINT4 blocks needs them, and ops in the
// exporter's graphs keep their semantics from opset 18 to 21.
func loadModel(path string) (*ortgraph.Model, int64, error) {
	m, err := ortgraph.Load(path)
	if err != nil {
		return nil, 0, err
	}
	if err := checkSupported(m); err != nil {
		return nil, 0, err
	}
	srcOpset := m.OpsetVersion("")
	if srcOpset < 18 {
		return nil, 0, fmt.Errorf("model %q imports opset %d: re-export with opset ≥ 18 (torch.onnx.export(..., dynamo=True))", path, srcOpset)
	}
	if srcOpset < 21 {
		m.SetOpset("", 21)
	}
	if m.P.IrVersion < 10 {
		m.P.IrVersion = 10
	}
	return m, srcOpset, nil
}

// graphs is what buildGraphs makes from one base model.
type graphs struct {
	base              *ortgraph.Graph // the rewritten base every graph is cloned from
	eval, train, rec  *ortgraph.Model
	steps             map[string]*deviceStep // by recomputation policy
	linears           *passes.Linears
	quant             []manifest.QuantLayer
	params            []manifest.LoRAParam
	layout            []manifest.FlatParam
	baseParams, vocab int64
	docIDs            bool // DocMask rewrote the base: attention_mask holds document ids
}

// deviceStep is one device step graph.
type deviceStep struct {
	m      *ortgraph.Model
	layout []manifest.FlatParam
	shared [][]string // initializers that share bytes (NBitsForward)
}

// buildSteps turns a training graph into its device-resident steps: DeviceStep once, then
// on that step NBitsForward (unless --dequantize-forward; with it, an NF4/FP4 base's
// MatMulBnb4 products go through Bnb4Forward) for the 4-bit step and, when dense,
// DenseBase (after Bnb4Forward for an NF4/FP4 base) on a copy of it for the dense step (nil
// otherwise); then, on each, lastPasses.
func buildSteps(o Options, m *ortgraph.Model, vocab int64, dense bool, logf func(string, ...any)) (four, denseStep *deviceStep, err error) {
	opts := o.passOptions(o.Dropout, true, vocab, passes.RecomputeOptions{})
	ctx, err := ortgraph.RunPasses(ortgraph.NewGraph(m), opts, logf, passes.DeviceStep)
	if err != nil {
		return nil, nil, err
	}
	layout := ortgraph.ResultOf[*passes.DeviceStepResult](ctx, passes.DeviceStep).Layout
	if dense {
		dm := cloneModel(m)
		ps := []*ortgraph.Pass{passes.DenseBase}
		if o.quantOptions().Type.IsBnb4() {
			ps = []*ortgraph.Pass{passes.Bnb4Forward, passes.DenseBase} // no MatMulBnb4 left: every read of W is a chain DenseBase folds
		}
		if _, err := ortgraph.RunPasses(ortgraph.NewGraph(dm), opts, logf, ps...); err != nil {
			return nil, nil, fmt.Errorf("dense step: %w", err)
		}
		denseStep = &deviceStep{m: dm, layout: layout}
	}
	four = &deviceStep{m: m, layout: layout}
	defer func() { // last: ScaleMatMul reads the GEMMs the passes below write
		ps := o.lastPasses()
		for _, st := range []*deviceStep{four, denseStep} {
			if err == nil && st != nil && len(ps) > 0 {
				_, err = ortgraph.RunPasses(ortgraph.NewGraph(st.m), opts, logf, ps...)
			}
		}
	}()
	switch {
	case !o.DequantizeForward:
		ctx, err := ortgraph.RunPasses(ortgraph.NewGraph(m), opts, logf, passes.NBitsForward)
		if err != nil {
			return nil, nil, err
		}
		four.shared = ortgraph.ResultOf[*passes.NBitsForwardResult](ctx, passes.NBitsForward).Shared
	case o.quantOptions().Type.IsBnb4():
		if _, err := ortgraph.RunPasses(ortgraph.NewGraph(m), opts, logf, passes.Bnb4Forward); err != nil {
			return nil, nil, err
		}
	}
	return four, denseStep, nil
}

// cloneModel is a deep copy of m (its protobuf; the directory its external data is read from
// stays).
func cloneModel(m *ortgraph.Model) *ortgraph.Model {
	return &ortgraph.Model{P: proto.Clone(m.P).(*onnxpb.ModelProto), Dir: m.Dir, Path: m.Path}
}

// buildGraphs runs the graph-wide passes on the base, then builds the evaluation graph, the
// training graph, the recomputing training graph and the device step from clones of it.
func buildGraphs(o Options, m *ortgraph.Model, logf func(string, ...any)) (*graphs, error) {
	base := ortgraph.NewGraph(m)
	if err := base.TopoSort(); err != nil {
		return nil, fmt.Errorf("model %q: %w", o.Model, err)
	}
	gs := &graphs{base: base, baseParams: countParams(m), vocab: vocabSize(base)}
	vocab := gs.vocab
	// Graph-wide rewrites every graph shares run on the base, before it is cloned;
	// Quantize brings FindLinears, whose result the clones are given.
	ps := []*ortgraph.Pass{passes.HalfSoftmax, passes.Quantize, passes.Rotary, passes.DocMask, passes.GroupedKV, passes.ORTCompat, passes.RMSNorm}
	if o.PlainMask {
		ps = slices.DeleteFunc(ps, func(p *ortgraph.Pass) bool { return p == passes.DocMask })
	}
	ctx, err := ortgraph.RunPasses(base, o.passOptions(o.Dropout, false, vocab, passes.RecomputeOptions{}), logf, ps...)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", o.Model, err)
	}
	gs.linears = ortgraph.ResultOf[*passes.Linears](ctx, passes.FindLinears)
	gs.quant = ortgraph.ResultOf[[]manifest.QuantLayer](ctx, passes.Quantize)
	gs.docIDs = !o.PlainMask && ortgraph.ResultOf[*passes.DocMaskResult](ctx, passes.DocMask).DocumentIDs()
	// The evaluation and training graphs start from the same quantized base.
	gs.eval, gs.train = cloneModel(m), cloneModel(m)
	if _, err := runWithLinears(gs.eval, o.passOptions(0, false, vocab, passes.RecomputeOptions{}), gs.linears, gs.quant, logf, passes.LoRA,
		passes.Loss); err != nil {
		return nil, fmt.Errorf("model %q: eval graph: %w", o.Model, err)
	}
	// The recomputing training graph starts from the same base; ortq train picks one.
	gs.rec = cloneModel(m)
	trainOpts := o.passOptions(o.Dropout, true, vocab, passes.RecomputeOptions{})
	recOpts := o.passOptions(o.Dropout, true, vocab, passes.RecomputeOptions{KeepMasks: o.KeepDropoutMasks, KeepKinds: o.keptKinds()})
	trainCtx, err := runWithLinears(gs.train, trainOpts, gs.linears, gs.quant, logf, o.trainPasses()...)
	if err != nil {
		return nil, fmt.Errorf("model %q: train graph: %w", o.Model, err)
	}
	if _, err := runWithLinears(gs.rec, recOpts, gs.linears, gs.quant, logf, append(o.trainPasses(), passes.Recompute)...); err != nil {
		return nil, fmt.Errorf("model %q: recomputing train graph: %w", o.Model, err)
	}
	gs.params = ortgraph.ResultOf[[]manifest.LoRAParam](trainCtx, passes.LoRA)
	// The device-resident steps: each recomputation policy's training graph with its state
	// flattened. Selective recomputation is one more recomputing graph; none is the
	// training graph itself.
	sel := cloneModel(m)
	selOpts := o.passOptions(o.Dropout, true, vocab, passes.RecomputeOptions{KeepProducts: true, KeepMasks: o.KeepDropoutMasks})
	if _, err := runWithLinears(sel, selOpts, gs.linears, gs.quant, logf, append(o.trainPasses(), passes.Recompute)...); err != nil {
		return nil, fmt.Errorf("model %q: selectively recomputing train graph: %w", o.Model, err)
	}
	if fwd := o.firstForwardPasses(); len(fwd) > 0 {
		for _, g := range []*ortgraph.Model{gs.rec, sel} {
			if _, err := ortgraph.RunPasses(ortgraph.NewGraph(g), nil, logf, fwd...); err != nil {
				return nil, fmt.Errorf("model %q: %w", o.Model, err)
			}
		}
	}
	gs.steps = map[string]*deviceStep{}
	// With a 4-bit base, each step also reads a dense base, for runs with room for it
	// (train --base).
	dense := len(gs.quant) > 0 && o.Bits == 4
	for policy, from := range map[string]*ortgraph.Model{manifest.RecomputeLayer: gs.rec, manifest.RecomputeSelective: sel, manifest.RecomputeNone: gs.train} {
		four, d, err := buildSteps(o, cloneModel(from), vocab, dense, logf)
		if err != nil {
			return nil, fmt.Errorf("model %q: device step graph (recompute %s): %w", o.Model, policy, err)
		}
		gs.steps[policy] = four
		if d != nil {
			gs.steps[manifest.DenseStep(policy)] = d
		}
	}
	for _, h := range []*ortgraph.Model{gs.train, gs.rec} { // the host's graphs, after buildSteps cloned them
		if _, err := ortgraph.RunPasses(ortgraph.NewGraph(h), nil, logf, o.lastPasses()...); err != nil {
			return nil, fmt.Errorf("model %q: %w", o.Model, err)
		}
	}
	gs.layout = gs.steps[manifest.RecomputeLayer].layout
	for policy, st := range gs.steps {
		if !reflect.DeepEqual(st.layout, gs.layout) {
			panic("prepare: the device step of recompute " + policy + " lays out its state differently")
		}
	}
	return gs, nil
}

// stepKeys lists the device steps gs holds: each policy, then its dense step if any.
func stepKeys(gs *graphs) []string {
	var keys []string
	for _, p := range manifest.RecomputePolicies {
		keys = append(keys, p)
		if gs.steps[manifest.DenseStep(p)] != nil {
			keys = append(keys, manifest.DenseStep(p))
		}
	}
	return keys
}

// buildManifest describes the model, the options and every graph's inputs and outputs.
func buildManifest(o Options, m *ortgraph.Model, srcOpset int64, gs *graphs) *manifest.Manifest {
	man := &manifest.Manifest{
		Format:   manifest.FormatVersion,
		Source:   manifest.Source{Path: m.Path, SHA256: m.SHA256, Opset: srcOpset},
		Options:  o,
		Weights:  manifest.WeightsFile,
		LoRAInit: manifest.LoRAInitFile,
		Params:   gs.params,
		Quant:    gs.quant,
	}
	if o.Bits == 4 {
		q := o.quantOptions()
		man.QuantType, man.QuantBlockSize, man.QuantDoubleQuant = string(q.Type), q.BlockSize, q.DoubleQuant
		if q.Type == "" {
			man.QuantType = manifest.QuantInt4
		}
	}
	linears := gs.linears
	man.Model = manifest.Model{Layers: linears.Layers, Hidden: linears.Hidden, Vocab: gs.vocab, Linears: len(linears.All), FoundBy: foundBy(linears),
		Precision: strings.ToLower(ortgraph.DTypeName(activationType(gs.base, linears)))}
	if gs.docIDs {
		man.AttentionMask = manifest.AttentionMaskDocumentIDs
	}
	man.Model.MaxPositions = maxPositions(filepath.Join(filepath.Dir(m.Path), "config.json"), m.P)
	if o.KeepDropoutMasks && o.Dropout > 0 {
		masked := map[string]bool{} // inputs whose mask is counted, with --share-dropout-masks
		for _, l := range linears.All {
			if l.Layer < 0 || !slices.Contains(o.Targets, l.Kind) || masked[l.Node.Input[0]] {
				continue
			}
			masked[l.Node.Input[0]] = o.ShareDropoutMasks
			man.Model.KeptMaskBytes += l.In
		}
	}
	elem := int64(ortgraph.ElemSize(activationType(gs.base, linears))) // of a kept product
	for _, l := range linears.All {
		if l.Layer >= 0 && slices.Contains(o.keptKinds(), l.Kind) {
			man.Model.KeptProductBytes += elem * l.Out
		}
	}
	man.Counts.BaseParams = gs.baseParams
	for _, q := range gs.quant {
		man.Counts.QuantizedParams += int64(q.Shape[0]) * int64(q.Shape[1])
	}
	for _, p := range gs.params {
		man.Counts.LoRAParams += p.Shape[0] * p.Shape[1]
	}
	man.Train = describe(ortgraph.NewGraph(gs.train), manifest.TrainFile)
	man.Eval = describe(ortgraph.NewGraph(gs.eval), manifest.EvalFile)
	rec := describe(ortgraph.NewGraph(gs.rec), manifest.TrainRecomputeFile)
	man.TrainRecompute = &rec
	for _, policy := range stepKeys(gs) {
		st := gs.steps[policy]
		stepG := ortgraph.NewGraph(st.m)
		d := describe(stepG, manifest.StepFile(policy))
		d.CaptureBlockers = passes.CaptureBlockers(stepG)
		d.SharedInitializers = st.shared
		if policy == manifest.RecomputeLayer {
			man.TrainStep = &d
			continue
		}
		if man.StepPolicies == nil {
			man.StepPolicies = map[string]*manifest.Graph{}
		}
		man.StepPolicies[policy] = &d
	}
	man.StepLayout = gs.layout
	return man
}

// writeArtifacts writes everything into a fresh temp directory and swaps it in at the end,
// so a failed or interrupted prepare never leaves a half-written artifacts directory.
func writeArtifacts(o Options, man *manifest.Manifest, gs *graphs) error {
	parent := filepath.Dir(filepath.Clean(o.Out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-"+filepath.Base(o.Out)+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	files := []string{manifest.TrainFile, manifest.TrainRecomputeFile, manifest.EvalFile}
	models := []*ortgraph.Model{gs.train, gs.rec, gs.eval}
	for _, policy := range stepKeys(gs) {
		files = append(files, manifest.StepFile(policy))
		models = append(models, gs.steps[policy].m)
	}
	sum, err := ortgraph.SaveSharedData(tmp, files, models, manifest.WeightsFile, 1024)
	if err != nil {
		return err
	}
	// Size and hash of weights.bin, hashed as it was written: every command refuses a
	// truncated copy, `ortq verify` and `ortq train` a damaged one.
	man.DataFiles = []manifest.DataFile{{File: manifest.WeightsFile, Size: sum.Size, SHA256: sum.SHA256}}
	if err := writeLoRAInit(filepath.Join(tmp, manifest.LoRAInitFile), gs.params, o.Seed); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(tmp, manifest.ManifestFile), man); err != nil {
		return err
	}
	// The hash was computed from the bytes just written, so the file is verified as it
	// stands; train reads it whole only once it changes (or is copied elsewhere).
	if err := man.RecordVerified(tmp); err != nil {
		return err
	}
	// MkdirTemp/CreateTemp create owner-only entries; artifacts are ordinary files.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if entries, err := os.ReadDir(tmp); err == nil {
		for _, e := range entries {
			os.Chmod(filepath.Join(tmp, e.Name()), 0o644)
		}
	}
	return fsutil.ReplaceDir(tmp, o.Out)
}

// runWithLinears runs passes on a clone of the base graph, giving them the base's
// FindLinears and Quantize results (provided, so neither runs again: the clone is already
// quantized) with the Linear nodes looked up again by name (the clone has its own node
// objects).
func runWithLinears(m *ortgraph.Model, opts ortgraph.Options, ls *passes.Linears, quant []manifest.QuantLayer, logf func(string, ...any),
	ps ...*ortgraph.Pass) (*ortgraph.Context, error) {
	g := ortgraph.NewGraph(m)
	byName := map[string]*onnxpb.NodeProto{}
	for _, n := range g.P.Node {
		byName[n.Name] = n
	}
	clone := &passes.Linears{Layers: ls.Layers, Hidden: ls.Hidden}
	for _, l := range ls.All {
		cp := *l
		cp.Node = byName[l.Node.Name]
		if cp.Node == nil {
			panic("prepare: Linear node " + l.Node.Name + " missing from the clone")
		}
		clone.All = append(clone.All, &cp)
	}
	ctx := ortgraph.NewContext(g, opts, logf)
	ctx.Provide(passes.FindLinears, clone)
	ctx.Provide(passes.Quantize, quant)
	return ctx, ctx.Run(ps...)
}

func foundBy(ls *passes.Linears) string {
	seen := map[string]bool{}
	var out []string
	for _, l := range ls.All {
		if !seen[l.Source] {
			seen[l.Source] = true
			out = append(out, l.Source)
		}
	}
	return strings.Join(out, "+")
}

// activationType is the element type the Linears compute in (float when not recorded).
func activationType(g *ortgraph.Graph, ls *passes.Linears) int32 {
	if len(ls.All) > 0 {
		if dt := g.ElemType(ls.All[0].Node.Input[0]); dt != 0 {
			return dt
		}
	}
	return ortgraph.Float
}

// vocabSize reads the embedding table's row count (the Gather reading input_ids).
func vocabSize(g *ortgraph.Graph) int64 {
	for _, n := range g.P.Node {
		if n.OpType == "Gather" && len(n.Input) == 2 && n.Input[1] == "input_ids" {
			if t := g.Initializer(n.Input[0]); t != nil && len(t.Dims) == 2 {
				return t.Dims[0]
			}
		}
	}
	return 0
}

func countParams(m *ortgraph.Model) int64 {
	var n int64
	floats := map[string]int64{}
	for _, t := range m.P.Graph.Initializer {
		if t.DataType == ortgraph.Float || t.DataType == ortgraph.Float16 || t.DataType == ortgraph.BF16 {
			floats[t.Name] = ortgraph.NumElements(t.Dims)
			n += floats[t.Name]
		}
	}
	// A source graph's 4-bit Linears hold K·N weights in packed bytes; their scales,
	// counted above, are not parameters of the model.
	for _, nd := range m.P.Graph.Node {
		if nd.OpType == "MatMulNBits" && nd.Domain == "com.microsoft" {
			n += ortgraph.AttrInt(nd, "K", 0) * ortgraph.AttrInt(nd, "N", 0)
			if len(nd.Input) > 2 {
				n -= floats[nd.Input[2]]
			}
		}
	}
	return n
}

func describe(g *ortgraph.Graph, file string) manifest.Graph {
	out := manifest.Graph{File: file, Nodes: len(g.P.Node)}
	for _, vi := range g.P.Input {
		if g.Initializer(vi.Name) != nil {
			continue
		}
		r, p := passes.Role(vi.Name, true)
		out.Inputs = append(out.Inputs, manifest.IO{Name: vi.Name, Role: r, Param: p, DType: dtypeOf(vi), Shape: g.SymDims(vi.Name)})
	}
	for _, vi := range g.P.Output {
		r, p := passes.Role(vi.Name, false)
		out.Outputs = append(out.Outputs, manifest.IO{Name: vi.Name, Role: r, Param: p, DType: dtypeOf(vi), Shape: g.SymDims(vi.Name)})
	}
	return out
}

func dtypeOf(vi *onnxpb.ValueInfoProto) string {
	if t := vi.GetType().GetTensorType(); t != nil {
		return strings.ToLower(ortgraph.DTypeName(t.ElemType))
	}
	return "?"
}

// loraInit draws PEFT's initial values: A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in),
// B = 0, so the adapted model starts equal to the base model.
func loraInit(params []manifest.LoRAParam, seed uint64) map[string][]float32 {
	rng := rand.New(rand.NewPCG(seed, 0x4c6f5241))
	out := map[string][]float32{}
	for _, p := range params {
		v := make([]float32, p.Shape[0]*p.Shape[1])
		if p.Kind == "A" {
			bound := 1 / math.Sqrt(float64(p.Shape[1]))
			for i := range v {
				v[i] = float32((rng.Float64()*2 - 1) * bound)
			}
		}
		out[p.Name] = v
	}
	return out
}

func writeLoRAInit(path string, params []manifest.LoRAParam, seed uint64) error {
	vals := loraInit(params, seed)
	ts := make([]safetensors.Tensor, 0, len(params))
	for _, p := range params {
		ts = append(ts, safetensors.F32Tensor(p.Name, p.Shape, vals[p.Name]))
	}
	return safetensors.Write(path, ts, map[string]string{"format": "pt", "seed": fmt.Sprint(seed)})
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, append(b, '\n'), 0o644)
}

// maxPositions is max_position_embeddings from a Hugging Face config.json beside the graph,
// else from the graph's metadata (0 if neither has it).
func maxPositions(configPath string, mp *onnxpb.ModelProto) int {
	if b, err := fsutil.ReadBounded(configPath, 1<<20); err == nil {
		var c struct {
			MaxPositions int `json:"max_position_embeddings"`
		}
		if json.Unmarshal(b, &c) == nil && c.MaxPositions > 0 {
			return c.MaxPositions
		}
	}
	// No config.json: graphs written by `ortq import`/`synth` carry it in their metadata.
	for _, kv := range mp.GetMetadataProps() {
		if kv.GetKey() == ortgraph.MetaMaxPositions {
			if n, err := strconv.Atoi(kv.GetValue()); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}
