package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ortq/ortq/hfimport"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

func newImport() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import --hf CHECKPOINT_DIR --out DIR",
		Short: "Build the Llama ONNX graph of a Hugging Face checkpoint (config.json + *.safetensors), in Go",
		Long: `import reads a Hugging Face LlamaForCausalLM checkpoint (config.json and model.safetensors,
or shards listed in model.safetensors.index.json; F32, F16 or BF16) and writes DIR/model.onnx
with its weights in DIR/model.onnx.data, plus config.json and the tokenizer files it finds.
The graph (inputs input_ids and attention_mask, output logits) is the one transformers
computes, with Hugging Face names on every Linear, ready for 'ortq prepare'.
--ops decomposed (default): opset 21 primitives, node for node transformers' eager code.
--ops fused: opset 23 RMSNormalization, RotaryEmbedding and Attention (same outputs within
float rounding, about a third of the nodes per layer; its training step measured ten times
slower on ORT 1.29 CUDA, H200, Llama-3.2-3B shape).
Weights stream tensor by tensor; PyTorch pickles (*.bin, *.pt) are never read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, common, err := commonOptions(cmd)
			if err != nil {
				return err
			}
			o := hfimport.ImportOptions{HF: v.GetString("hf"), Common: common}
			if o.HF == "" {
				return usageError{fmt.Errorf("--hf is required")}
			}
			if o.Out == "" {
				return usageError{fmt.Errorf("--out is required")}
			}
			if _, err := hfimport.ParseDType(o.DType); err != nil {
				return usageError{err}
			}
			if _, err := hfimport.ParseOps(o.Ops); err != nil {
				return usageError{err}
			}
			release, err := lockReplaced(o.Out, v.GetBool("quiet"))
			if err != nil {
				return err
			}
			defer release()
			res, err := hfimport.Import(o)
			if err != nil {
				return err
			}
			report(res)
			return nil
		},
	}
	f := cmd.Flags()
	f.String("hf", "", "Hugging Face checkpoint directory (config.json + *.safetensors)")
	f.String("out", "", "output directory (created atomically)")
	f.String("dtype", "float32", "graph precision: float32 or float16")
	f.String("ops", "decomposed", "graph ops: decomposed (opset-21 primitives) or fused (opset-23 Attention, RMSNormalization, RotaryEmbedding)")
	commonFlags(cmd)
	return cmd
}

func newSynth() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "synth --preset NAME --out DIR",
		Short: "Write a Llama ONNX graph with random weights (benchmarks, tests)",
		Long: `synth writes the graph 'ortq import' would build for a known config, with weights drawn as
Hugging Face initialises them (Linear and embedding N(0, 0.02), RMSNorm 1), generated in parallel
straight into DIR/model.onnx.data. Presets: ` + strings.Join(hfimport.PresetNames(), ", ") + `.
The same --seed gives the same bytes on any machine and core count. --layers cuts the decoder
(embedding and lm_head stay whole). --quantize writes the decoder Linears 4-bit directly, the
packing prepare would make, so a large model never has a full-precision copy on disk.
Default dtype: float16, float32 for presets under 100M parameters (tiny). Default --ops: decomposed (opset-21 primitives, exactly 'ortq import's
default graph); fused (opset-23 Attention, RMSNormalization, RotaryEmbedding) trained ten
times slower on ORT 1.29 CUDA in our measurement (H200, Llama-3.2-3B shape).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, common, err := commonOptions(cmd)
			if err != nil {
				return err
			}
			o := hfimport.SynthOptions{Preset: v.GetString("preset"), Seed: v.GetUint64("seed"), Layers: v.GetInt("layers"), Common: common}
			if o.Preset == "" {
				return usageError{fmt.Errorf("--preset is required: one of %s", strings.Join(hfimport.PresetNames(), ", "))}
			}
			if _, err := hfimport.Preset(o.Preset); err != nil {
				return usageError{err}
			}
			if o.Out == "" {
				return usageError{fmt.Errorf("--out is required")}
			}
			if o.DType != "" {
				if _, err := hfimport.ParseDType(o.DType); err != nil {
					return usageError{err}
				}
			}
			if o.Ops != "" {
				if _, err := hfimport.ParseOps(o.Ops); err != nil {
					return usageError{err}
				}
			}
			if o.Layers < 0 {
				return usageError{fmt.Errorf("--layers %d: must be ≥ 0", o.Layers)}
			}
			release, err := lockReplaced(o.Out, v.GetBool("quiet"))
			if err != nil {
				return err
			}
			defer release()
			res, err := hfimport.Synth(o)
			if err != nil {
				return err
			}
			report(res)
			return nil
		},
	}
	f := cmd.Flags()
	f.String("preset", "", "model shape: "+strings.Join(hfimport.PresetNames(), ", "))
	f.Uint64("seed", 0, "random seed of the weights")
	f.String("out", "", "output directory (created atomically)")
	f.String("dtype", "", "graph precision: float32 or float16 (default: float16, float32 for tiny)")
	f.Int("layers", 0, "keep only the first N decoder layers (0: all)")
	f.String("ops", "", "graph ops: fused (opset-23 Attention, RMSNormalization, RotaryEmbedding) or decomposed (opset-21 primitives) (default: decomposed)")
	commonFlags(cmd)
	return cmd
}

func commonFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Bool("force", false, "replace an existing output directory written by import/synth (and holding nothing else)")
	f.Int("min-external", hfimport.DefaultMinExternal, "weights of at least this many bytes go to model.onnx.data")
	f.Int("workers", 0, "parallel conversion/generation workers (0: one per core)")
	f.Bool("quiet", false, "no progress bar")
	f.Bool("quantize", false,
		"write the decoder Linears 4-bit (com.microsoft.MatMulNBits, the bytes prepare would make): no full-precision copy on disk; prepare takes them as they are")
	f.Int("block-size", 32, "with --quantize: elements per 4-bit block (16–256, power of two)")
	f.Bool("asymmetric", false, "with --quantize: per-block zero points (min/max), as prepare --asymmetric")
	f.String("quant", "int4", "with --quantize: the 4-bit type, as prepare --quant: int4 (MatMulNBits), nf4 or fp4 (MatMulBnb4)")
	f.Bool("double-quant", false, "with --quantize --quant nf4|fp4: absmax values in 8 bits, as prepare --double-quant")
}

// commonOptions reads the command's options and the part import and synth share.
func commonOptions(cmd *cobra.Command) (*viper.Viper, hfimport.Common, error) {
	v, err := options(cmd)
	if err != nil {
		return nil, hfimport.Common{}, err
	}
	for _, f := range []string{"block-size", "asymmetric", "quant", "double-quant"} {
		if cmd.Flags().Changed(f) && !v.GetBool("quantize") {
			return nil, hfimport.Common{}, usageError{fmt.Errorf("--%s applies only with --quantize", f)}
		}
	}
	var progress io.Writer = os.Stderr
	if v.GetBool("quiet") {
		progress = nil
	}
	return v, hfimport.Common{Out: v.GetString("out"), DType: v.GetString("dtype"), Ops: v.GetString("ops"), Force: v.GetBool("force"),
		MinExternal: v.GetInt("min-external"), Workers: v.GetInt("workers"), Progress: progress,
		Quantize: v.GetBool("quantize"), BlockSize: v.GetInt("block-size"), Asymmetric: v.GetBool("asymmetric"), Quant: v.GetString("quant"),
		DoubleQuant: v.GetBool("double-quant")}, nil
}

func report(res *hfimport.Result) {
	c := res.Config
	fmt.Printf("wrote %s: %d layers, hidden %d, %d/%d heads, vocab %d, %s, %s ops, %.3g M parameters, %d nodes, %.1f MB external data, %.1f s\n",
		res.Model, c.NumLayers, c.HiddenSize, c.NumHeads, c.NumKVHeads, c.VocabSize, res.DType, res.Ops,
		float64(res.Params)/1e6, res.Nodes, float64(res.DataBytes)/1e6, res.Elapsed.Seconds())
}
