package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/ortq/ortq/export"
	"github.com/spf13/cobra"
)

func newExport() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export --artifacts DIR [--adapter RUN/adapter_model.safetensors] --out DIR",
		Short: "Write an ONNX Runtime inference model with a KV cache (int4 base, LoRA), genai_config.json and the tokenizer",
		Long: `export builds a Llama decoder with a KV cache from prepared artifacts, in the layout
onnxruntime-genai's Llama models use (inputs input_ids, attention_mask, position_ids,
past_key_values.{i}.key/value; outputs logits, present.{i}.key/value), and writes it to --out
with genai_config.json, config.json and the tokenizer files. The base Linears are the 4-bit
MatMulNBits the model was trained on (copied, not re-quantized). With --adapter the LoRA
update is two low-rank MatMuls beside each target Linear (exact), or, with --merge, folded
into full-precision weights. --format onnx-adapter writes the base model with the LoRA
tensors as optional inputs and the adapter as ONNX Runtime's adapter.onnx_adapter, for its
LoRA adapter API.

--kv-cache shared writes onnxruntime-genai's past_present_share_buffer layout instead: the
cache inputs are buffers of a fixed maximum length that each layer's GroupQueryAttention
(com.microsoft, rotary inside) writes in place, and the inputs are input_ids and
attention_mask only (positions follow from the mask; rows right-padded). ortq generate
decodes it in batches and, on CUDA, in a CUDA graph; on CUDA GroupQueryAttention wants a
float16 graph (prepare a float16 model). The default, concat, returns past+new as a new
present tensor each step.

The shared layout's decode graph is fused (--fuse=false writes it unfused, for an A/B): q, k
and v are one MatMulNBits feeding GroupQueryAttention's packed-QKV form, the LoRA targets
that read one input share one low-rank A product (α/r folded into B; one MatMul and Add per
base output), and each residual Add and the RMSNorm after it are one
SkipSimplifiedLayerNormalization. With --format onnx-adapter the adapter file then holds the
packed tensors the fused graph reads (PEFT's per-target A and B with --fuse=false or the
concat layout); any adapter of the same artifacts exported this way fits the same model.onnx.
Where q, k and v cannot be one node (different block sizes or zero points, a double-quantized
NF4/FP4 absmax, --merge) they stay three and a note says why. The fusions applied are printed and recorded in model.onnx's metadata (ortq.fused),
which ortq generate and bench generate report.

Heads, head size and rotary frequencies come from the model's Hugging Face config.json: the
one beside the source graph or in the checkpoint directory given to prepare, or --hf-config.`,
		Args: cobra.NoArgs,
		RunE: runExport,
	}
	f := cmd.Flags()
	f.String("artifacts", "", "artifacts directory written by ortq prepare")
	f.String("adapter", "", "adapter_model.safetensors written by ortq train (PEFT names); none: the base model")
	f.String("out", "", "directory to write (replaced atomically with --force)")
	f.Bool("merge", false, "fold the adapter into the weights (full precision) instead of separate low-rank MatMuls")
	f.String("format", export.FormatONNX, "onnx: one model; onnx-adapter: base model with LoRA inputs + adapter.onnx_adapter")
	f.String("kv-cache", export.KVConcat, "KV-cache layout: concat (present = past + new) or shared "+
		"(fixed-length buffers written in place by GroupQueryAttention: batches and CUDA graphs in ortq generate)")
	f.Bool("fuse", true, "--kv-cache shared: write the fused decode graph (q/k/v as one MatMulNBits into GroupQueryAttention's packed form, "+
		"LoRA with α/r folded and one A product per input, residual Add + RMSNorm as SkipSimplifiedLayerNormalization); false: one node per op, for an A/B")
	f.String("hf-config", "", "the model's Hugging Face config.json (default: found beside the model given to prepare)")
	f.String("tokenizer", "", "tokenizer.json to ship (default: the one beside config.json; \"default\": the embedded model's)")
	f.Bool("force", false, "replace an existing --out that holds an earlier export and nothing else (a run, another output or your files are refused)")
	f.Bool("quiet", false, "no messages but errors")
	return cmd
}

// runExport is export's command: the options from flags, the export under the output's lock,
// then its warnings, fusion notes and files.
func runExport(cmd *cobra.Command, _ []string) error {
	v, err := options(cmd)
	if err != nil {
		return err
	}
	o := export.Options{Artifacts: v.GetString("artifacts"), Adapter: v.GetString("adapter"), Out: v.GetString("out"),
		Merge: v.GetBool("merge"), Format: v.GetString("format"), HFConfig: v.GetString("hf-config"), Force: v.GetBool("force"),
		KVCache: v.GetString("kv-cache"), NoFuse: !v.GetBool("fuse")}
	if o.Artifacts == "" {
		return usageError{fmt.Errorf("--artifacts is required")}
	}
	if o.Tokenizer, err = resolveTokenizer(v.GetString("tokenizer")); err != nil {
		return err
	}
	release, err := lockReplaced(o.Out, v.GetBool("quiet"))
	if err != nil {
		return err
	}
	defer release()
	res, err := export.Run(o)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	for _, n := range res.FuseNotes {
		fmt.Fprintln(os.Stderr, "note:", n)
	}
	fmt.Printf("wrote %s: %s\n", res.Dir, strings.Join(res.Files, ", "))
	if o.KVCache == export.KVShared {
		fmt.Printf("decode graph fused: %s\n", orNone(res.Fused))
	}
	return nil
}

// orNone joins names with commas, "none" for none.
func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}
