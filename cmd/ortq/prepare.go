package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newPrepare() *cobra.Command {
	d := prepare.DefaultOptions()
	cmd := &cobra.Command{
		Use:   "prepare --model MODEL.onnx --out DIR",
		Short: "Rewrite a Llama ONNX graph into training artifacts (4-bit base, LoRA, loss, backward)",
		Long: `prepare reads a Llama ONNX graph (stock torch.onnx dynamo export, opset 18-23, or a
TorchScript/optimum-style export with named weights) and writes an artifacts directory:
train.onnx (forward + backward), eval.onnx (forward + loss), weights.bin (the weights once,
shared by both graphs), lora_init.safetensors (PEFT names) and manifest.json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPrepare(cmd) },
	}
	f := cmd.Flags()
	f.String("model", defaultmodel.Name,
		"Llama ONNX graph to fine-tune (weights inline or as external data beside it); \"default\" is the small pretrained Llama embedded in ortq")
	f.String("out", "", "artifacts directory to write (created atomically)")
	f.Bool("force", false,
		"replace an existing artifacts directory that holds artifacts and nothing else (a run inside it, another output or your files are refused)")
	f.Bool("list-targets", false, "print the Linear layers found per decoder layer and exit")
	f.StringSlice("targets", d.Targets, "LoRA target Linears: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head")
	f.Int("lora-r", d.Rank, "LoRA rank r")
	f.Float64("lora-alpha", d.Alpha, "LoRA alpha (updates are scaled by alpha/r, as PEFT does)")
	f.Float64("lora-dropout", d.Dropout, "dropout on the LoRA input during training")
	f.Int("bits", d.Bits, "4: quantize the base Linears to 4 bits (see --quant); 16: keep the base as it is")
	f.Int("block-size", d.BlockSize,
		"4-bit quantization block size (16-256, power of two): along the input dimension for int4, over the flattened weight for nf4/fp4 (bitsandbytes' "+
			"default is 64)")
	f.Bool("asymmetric", false, "int4 quantization with per-block zero points (default: symmetric)")
	f.String("quant", "int4",
		"4-bit data type: int4 (MatMulNBits, a scale per block), nf4 or fp4 (bitsandbytes' NormalFloat/FP4 tables with an absmax per block, MatMulBnb4)")
	f.Bool("double-quant", false, "nf4/fp4: store the absmax values in 8 bits with a float32 scale per 256 blocks (bitsandbytes' bnb_4bit_use_double_quant)")
	f.Bool("quantize-lm-head", false, "also quantize lm_head (kept 16-bit by default)")
	f.Uint64("seed", d.Seed, "seed for the LoRA initial values")
	f.Bool("generic-softmax-grad", false,
		"attention's softmax gradient by the generic rule (row sums over the scores) instead of from rowsum(dO⊙O) folded into the dP product: an A/B "+
			"switch for measurements")
	f.Bool("plain-mask", false,
		"keep the model's 0/1 attention mask: no document ids, so train packs by plain concatenation only (--pack concat or none); the graphs skip the "+
			"document comparison")
	f.Bool("dequantize-forward", false,
		"keep the device step's forward products of int4 Linears as DequantizeLinear + MatMul (default: MatMulNBits, whose dequantization is faster; train "+
			"gives both forms of each 4-bit weight one buffer); nf4/fp4: the products as in-graph dequantization + FusedMatMul instead of MatMulBnb4, so "+
			"that the step can be captured in CUDA graphs (MatMulBnb4 cannot)")
	addStepFlags(f, d)
	f.Int("loss-chunks", d.LossChunks, fmt.Sprintf(
		"compute lm_head + loss in this many blocks of the sequence, one after the other, so the [tokens, vocab] logits never exist whole (0: off; -1: %d when "+
			"vocab > %d)", passes.AutoLossChunks, passes.AutoLossChunksAbove))
	f.Bool("quiet", false, "no progress messages")
	f.String("base-model-name", "", "base_model_name_or_path for the adapters trained on these artifacts (default: the --model path, made absolute)")
	f.Bool("check-placement", false, "open the graphs on --device and fail if ONNX Runtime puts a compute node on the CPU (shape-only nodes are listed)")
	f.String("device", "cuda", "execution provider for --check-placement: cuda or cuda:N")
	return cmd
}

// addStepFlags adds prepare's switches of how the training graphs compute a step (fused
// nodes, ortq's kernels, what the recomputation keeps): each on or off by default as d says,
// and each an A/B switch for measurements.
func addStepFlags(f *pflag.FlagSet, d prepare.Options) {
	f.Bool("attention-forward", d.AttentionForward,
		"write each attention of the recomputing training graphs' first forward (whose scores and probabilities the backward pass does not read) "+
			"as one fused node (--attention-kernel); false keeps them decomposed")
	f.String("attention-kernel", "mha",
		"the node --attention-forward writes: mha (com.microsoft.MultiHeadAttention, kv heads repeated per query head) or attention (opset-23 Attention)")
	f.Bool("keep-dropout-masks", d.KeepDropoutMasks,
		"the recomputing training graphs keep the LoRA dropout masks of the first forward (one byte a LoRA input element) instead of recomputing them")
	f.Bool("share-dropout-masks", d.ShareDropoutMasks,
		"one LoRA dropout mask per input instead of one per target: q_proj and v_proj of a layer see the same dropped elements and their A "+
			"products run as one GEMM; =false draws one mask per target, as PEFT does")
	f.Bool("keep-kv", d.KeepKV,
		"the per-layer recomputing training graph keeps the first forward's k_proj and v_proj products (2·(k and v widths) bytes a token and layer) "+
			"instead of recomputing their GEMMs")
	f.Bool("fused-kernels", d.FusedKernels,
		"the training graphs use ortq's own ops (domain ai.ortq, a CPU and a CUDA kernel each): the float16 SwiGLU gradient as one SwiGLUGrad "+
			"node and the activation as one SwiGLU node; =false keeps stock ONNX ops")
	f.Bool("fused-norm-grad", d.FusedNormGrad,
		"the float16 RMSNorm gradient as one ai.ortq RMSNormGrad node (a CPU and a CUDA kernel) instead of six elementwise kernels and a GEMV; "+
			"=false keeps stock ONNX ops")
	f.Bool("attention-kernels", d.AttentionKernels,
		"the training graphs' float16 rotary embeddings as ortq's ai.ortq.Rotary kernel and the recomputed attention's mask Add + Softmax "+
			"as one ai.ortq.MaskedSoftmax; =false keeps ONNX Runtime's RotaryEmbedding, Add and Softmax")
	f.Bool("norm-kernels", d.NormKernels,
		"the training graphs' recomputed float16 RMSNorms as ortq's ai.ortq.RMSNorm kernel, and each RMSNormGrad (--fused-norm-grad) "+
			"adding the residual stream's other gradient itself; =false keeps SimplifiedLayerNormalization and the Sum")
	f.Bool("bnb4-kernel", d.Bnb4Kernel,
		"a float16 nf4/fp4 base's in-graph dequantizations (dx's, and the forward products' with --dequantize-forward) as one "+
			"ai.ortq.DequantBnb4 kernel each instead of a Cast, a Gather and a Mul (not yet measured on a GPU, so off by default)")
	f.Bool("fold-scales", d.FoldScales,
		"in the training graphs, a multiplication by a scalar read only by GEMMs (attention's scaled score gradient), "+
			"or of a GEMM's sole product, becomes their FusedMatMul alpha")
	f.Bool("fuse-residual-norm", d.FuseResidualNorm,
		"in the recomputing training graphs' first forward, each residual Add and the RMSNorm it feeds as one com.microsoft.SkipSimplifiedLayerNormalization")
}

// runPrepare is `ortq prepare`: options checked, the output locked, the model resolved
// (default or a Hugging Face checkpoint imported), the artifacts written.
func runPrepare(cmd *cobra.Command) error {
	defer func() {
		for _, f := range cleanups {
			f()
		}
		cleanups = nil
	}()
	v, err := options(cmd)
	if err != nil {
		return err
	}
	o := prepare.Options{
		Model: v.GetString("model"), Out: v.GetString("out"), Force: v.GetBool("force"),
		Targets: splitList(v.GetStringSlice("targets")), Rank: v.GetInt("lora-r"), Alpha: v.GetFloat64("lora-alpha"),
		Dropout: v.GetFloat64("lora-dropout"), Bits: v.GetInt("bits"), BlockSize: v.GetInt("block-size"),
		Asymmetric: v.GetBool("asymmetric"), QuantizeLMHead: v.GetBool("quantize-lm-head"), Seed: v.GetUint64("seed"),
		LossChunks:         v.GetInt("loss-chunks"),
		DequantizeForward:  v.GetBool("dequantize-forward"),
		AttentionForward:   v.GetBool("attention-forward"),
		AttentionKernel:    v.GetString("attention-kernel"),
		KeepDropoutMasks:   v.GetBool("keep-dropout-masks"),
		FuseResidualNorm:   v.GetBool("fuse-residual-norm"),
		ShareDropoutMasks:  v.GetBool("share-dropout-masks"),
		KeepKV:             v.GetBool("keep-kv"),
		FusedKernels:       v.GetBool("fused-kernels"),
		FoldScales:         v.GetBool("fold-scales"),
		FusedNormGrad:      v.GetBool("fused-norm-grad"),
		AttentionKernels:   v.GetBool("attention-kernels"),
		NormKernels:        v.GetBool("norm-kernels"),
		Bnb4Kernel:         v.GetBool("bnb4-kernel"),
		PlainMask:          v.GetBool("plain-mask"),
		GenericSoftmaxGrad: v.GetBool("generic-softmax-grad"),
		Quant:              v.GetString("quant"), DoubleQuant: v.GetBool("double-quant"),
	}
	// adapter_config.json's base_model_name_or_path: what the user named, not a temporary import.
	o.BaseModel = train.BaseModelOf(o.Model, v.GetString("base-model-name"))
	if !v.GetBool("list-targets") {
		if err := o.Validate(); err != nil {
			return usageError{err}
		}
	}
	if !v.GetBool("list-targets") {
		release, err := lockReplaced(o.Out, v.GetBool("quiet"))
		if err != nil {
			return err
		}
		defer release()
	}
	// A Hugging Face checkpoint headed for a 4-bit base is imported with its Linears
	// already packed (the bytes the quantize pass would make), so no full-precision
	// copy of them is written to the temporary directory.
	model, err := resolveModel(o, o.Bits == 4 && !v.GetBool("list-targets"))
	if err != nil {
		return err
	}
	if v.GetBool("list-targets") {
		return listTargets(model)
	}
	o.Model = model
	logf := func(f string, a ...any) {
		if !v.GetBool("quiet") {
			fmt.Fprintf(os.Stderr, f+"\n", a...)
		}
	}
	res, err := prepare.Run(o, logf)
	if err != nil {
		return err
	}
	if v.GetBool("check-placement") {
		if err := checkPlacement(v, o.Out); err != nil {
			return err
		}
	}
	m := res.Manifest
	fmt.Printf("wrote %s: %d layers, %d Linears (%s), %d quantized, %d LoRA tensors (%d parameters), train graph %d nodes, eval graph %d nodes\n",
		o.Out, m.Model.Layers, m.Model.Linears, m.Model.FoundBy, len(m.Quant), len(m.Params), m.Counts.LoRAParams, m.Train.Nodes, m.Eval.Nodes)
	return nil
}

// resolveModel maps "default" to the embedded model, extracted to the user cache, and a
// Hugging Face checkpoint directory to an ONNX graph imported into a temp directory
// (removed by the caller through cleanup), its decoder Linears packed as o asks when
// quantize is set.
func resolveModel(o prepare.Options, quantize bool) (string, error) {
	m := o.Model
	if m == defaultmodel.Name {
		model, _, err := defaultmodel.Extract(defaultmodel.Dir())
		return model, err
	}
	if st, err := os.Stat(m); err == nil && st.IsDir() {
		if _, err := os.Stat(filepath.Join(m, "config.json")); err != nil {
			return "", fmt.Errorf("--model %q is a directory without config.json: pass an .onnx file or a Hugging Face checkpoint directory", m)
		}
		tmp, err := os.MkdirTemp("", "ortq-import-")
		if err != nil {
			return "", err
		}
		cleanups = append(cleanups, func() { os.RemoveAll(tmp) })
		res, err := hfimport.Import(hfimport.ImportOptions{HF: m, Common: hfimport.Common{Out: filepath.Join(tmp, "onnx"), DType: "float32", Progress: os.Stderr,
			Quantize: quantize, BlockSize: o.BlockSize, Asymmetric: o.Asymmetric, Quant: o.Quant, DoubleQuant: o.DoubleQuant}})
		if err != nil {
			return "", err
		}
		return res.Model, nil
	}
	return m, nil
}

// lockReplaced takes the locks of an output that is replaced as a whole (prepare,
// import, synth, export: beside it and inside it) and recovers what killed writers left beside it: an old directory
// moved aside is put back, unfinished temporary directories are removed.
func lockReplaced(out string, quiet bool) (release func(), err error) {
	if out == "" {
		return nil, usageError{fmt.Errorf("--out is required")}
	}
	lock, err := fsutil.LockReplaced(out)
	if err != nil {
		return nil, err
	}
	did, err := fsutil.RecoverReplaced(out)
	if err != nil {
		lock.Release()
		return nil, err
	}
	if len(did) > 0 && !quiet {
		fmt.Fprintf(os.Stderr, "left by an interrupted earlier run: %s\n", strings.Join(did, "; "))
	}
	// The lock a train or bench holds inside out, too: never swap away a directory a
	// live run writes into, and let none start there before the swap.
	inside, err := fsutil.LockInside(out)
	if err != nil {
		lock.Release()
		return nil, err
	}
	return func() { inside.Release(); lock.Release() }, nil
}

// cleanups run when a command finishes (temporary imports).
var cleanups []func()

// resolveTokenizer maps "default" to the embedded model's tokenizer.
func resolveTokenizer(t string) (string, error) {
	if t != defaultmodel.Name {
		return t, nil
	}
	_, tok, err := defaultmodel.Extract(defaultmodel.Dir())
	return tok, err
}

func checkPlacement(v interface{ GetString(string) string }, dir string) error {
	lib, err := ortrun.FindLibrary(v.GetString("ort-lib"))
	if err != nil {
		return err
	}
	if err := ortrun.Init(lib); err != nil {
		return err
	}
	k, err := knobs()
	if err != nil {
		return err
	}
	opts := ortrun.Options{Device: v.GetString("device")}
	applyKnobs(&opts, k)
	reps, err := prepare.CheckPlacement(dir, opts)
	if err != nil {
		return err
	}
	bad := 0
	for _, r := range reps {
		fmt.Printf("%s: %v; on CPU by design (integer/bool shape math): %d nodes; inserted by ORT: %d\n", r.File, r.ByProvider, len(r.ShapeOnCPU), len(r.Inserted))
		for _, n := range r.ShapeOnCPU {
			fmt.Printf("  shape-only on CPU: %s\n", n)
		}
		for _, n := range r.Inserted {
			fmt.Printf("  inserted on CPU: %s\n", n)
		}
		for _, n := range r.ComputeOnCPU {
			fmt.Printf("  COMPUTE ON CPU: %s\n", n)
		}
		bad += len(r.ComputeOnCPU)
	}
	if bad > 0 {
		return fmt.Errorf("%d compute nodes run on the CPU instead of %s (listed above)", bad, v.GetString("device"))
	}
	return nil
}

func listTargets(model string) error {
	if model == "" {
		return usageError{fmt.Errorf("--model is required")}
	}
	ls, err := prepare.Inspect(model)
	if err != nil {
		return err
	}
	byLayer := map[int][]string{}
	for _, l := range ls.All {
		byLayer[l.Layer] = append(byLayer[l.Layer], fmt.Sprintf("%s[%d→%d via %s]", l.Kind, l.In, l.Out, l.Source))
	}
	for i := 0; i < ls.Layers; i++ {
		fmt.Printf("layer %d: %s\n", i, strings.Join(byLayer[i], " "))
	}
	if h := byLayer[-1]; len(h) > 0 {
		fmt.Printf("head: %s\n", strings.Join(h, " "))
	}
	return nil
}

func splitList(v []string) []string {
	var out []string
	for _, s := range v {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
