package export

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// File names in an exported directory.
const (
	ModelFile       = "model.onnx"
	DataFile        = "model.onnx.data"
	GenAIConfigFile = "genai_config.json"
	AdapterFile     = "adapter.onnx_adapter"
)

// Formats of `ortq export --format`.
const (
	FormatONNX        = "onnx"         // one model, adapter inside (separate or merged)
	FormatONNXAdapter = "onnx-adapter" // base model with LoRA inputs + .onnx_adapter
)

// Options of `ortq export`.
type Options struct {
	Artifacts string
	Adapter   string // adapter_model.safetensors ("" = base model)
	Out       string
	Merge     bool
	Format    string
	HFConfig  string // config.json ("" = found from the manifest)
	Tokenizer string // tokenizer.json ("" = beside config.json)
	// KVCache is the cache layout: KVConcat ("" too) or KVShared (gqa.go).
	KVCache string
	// NoFuse writes the shared layout's decode graph unfused (--fuse=false, for an A/B):
	// three q/k/v MatMulNBits, four LoRA nodes per target, separate residual Adds.
	NoFuse bool
	Force  bool
}

// Result says what Run wrote.
type Result struct {
	Dir      string
	Files    []string
	Mode     LoRAMode
	Warnings []string
	// Fused lists the fusions of the decode graph (FuseQKV, ...; shared layout only) and
	// FuseNotes why some were left out.
	Fused     []string
	FuseNotes []string
}

// Run writes the inference model into opts.Out, built in a temporary sibling directory and
// renamed into place, so a failure leaves nothing half-written.
func Run(o Options) (*Result, error) {
	if o.Format == "" {
		o.Format = FormatONNX
	}
	if o.KVCache == "" {
		o.KVCache = KVConcat
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	s, err := Open(o.Artifacts, o.HFConfig)
	if err != nil {
		return nil, err
	}
	var ad *Adapter
	if o.Adapter != "" {
		if ad, err = LoadAdapter(o.Adapter, s.Man); err != nil {
			return nil, err
		}
	}
	mode := LoRASeparate
	switch {
	case ad == nil:
		mode = LoRANone
	case o.Merge:
		mode = LoRAMerged
	case o.Format == FormatONNXAdapter:
		mode = LoRAInputs
	}
	m, built, err := BuildLayout(s, ad, mode, o.KVCache, !o.NoFuse)
	if err != nil {
		return nil, err
	}
	inits := map[string]*onnxpb.TensorProto{}
	for _, t := range m.P.Graph.Initializer {
		inits[t.Name] = t
	}
	slow := slowGEMV(m.P.Graph, inits)
	res, err := write(o, s, built.AdapterParams, mode, m)
	if err != nil {
		return nil, err
	}
	res.Warnings = append(res.Warnings, slow...)
	res.Fused, res.FuseNotes = built.Applied, built.Notes
	return res, nil
}

// check refuses option combinations that make no sense, naming the flags.
func (o *Options) check() error {
	switch {
	case o.Format != FormatONNX && o.Format != FormatONNXAdapter:
		return fmt.Errorf("--format %q: use onnx or onnx-adapter", o.Format)
	case o.Format == FormatONNXAdapter && (o.Adapter == "" || o.Merge):
		return fmt.Errorf("--format onnx-adapter needs --adapter and cannot be combined with --merge")
	case o.Merge && o.Adapter == "":
		return fmt.Errorf("--merge needs --adapter")
	case o.KVCache != KVConcat && o.KVCache != KVShared:
		return fmt.Errorf("--kv-cache %q: use %s or %s", o.KVCache, KVConcat, KVShared)
	}
	return fsutil.CheckReplace(o.Out, o.Force, GenAIConfigFile, "export")
}

// write fills a temporary sibling of o.Out (model, adapter file, genai_config.json,
// tokenizer) and swaps it into place.
func write(o Options, s *Source, params []AdapterParam, mode LoRAMode, m *ortgraph.Model) (*Result, error) {
	parent := filepath.Dir(filepath.Clean(o.Out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-"+filepath.Base(o.Out)+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	res := &Result{Dir: o.Out, Mode: mode}
	if _, err := m.Save(filepath.Join(tmp, ModelFile), DataFile, 1024); err != nil {
		return nil, err
	}
	res.Files = append(res.Files, ModelFile, DataFile)
	if mode == LoRAInputs {
		if err := writeAdapterParams(filepath.Join(tmp, AdapterFile), params); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, AdapterFile)
	}
	gc, err := genaiConfig(s, ModelFile, o.KVCache == KVShared)
	if err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(tmp, GenAIConfigFile), gc); err != nil {
		return nil, err
	}
	res.Files = append(res.Files, GenAIConfigFile)
	copied, warn, err := copyTokenizer(tmp, s.ConfigPath, o.Tokenizer)
	if err != nil {
		return nil, err
	}
	res.Files, res.Warnings = append(res.Files, copied...), warn
	// MkdirTemp/CreateTemp make owner-only entries; an exported model is ordinary files.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	for _, f := range res.Files {
		if err := os.Chmod(filepath.Join(tmp, f), 0o644); err != nil {
			return nil, err
		}
	}
	if err := fsutil.ReplaceDir(tmp, o.Out); err != nil {
		return nil, err
	}
	return res, nil
}

// copyTokenizer copies tokenizer.json and its companions (from the directory of
// tokenizer, or else of config.json) into dir, with the model's config.json and
// generation_config.json.
func copyTokenizer(dir, configPath, tokenizer string) (copied, warnings []string, err error) {
	tokDir := filepath.Dir(configPath)
	if tokenizer != "" {
		if _, err := os.Stat(tokenizer); err != nil {
			return nil, nil, fmt.Errorf("--tokenizer: %w", err)
		}
		tokDir = filepath.Dir(tokenizer)
		if err := copyFile(tokenizer, filepath.Join(dir, "tokenizer.json")); err != nil {
			return nil, nil, err
		}
		copied = append(copied, "tokenizer.json")
	}
	if err := copyFile(configPath, filepath.Join(dir, "config.json")); err != nil {
		return nil, nil, err
	}
	copied = append(copied, "config.json")
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"} {
		if f == "tokenizer.json" && tokenizer != "" {
			continue
		}
		src := filepath.Join(tokDir, f)
		if f == "generation_config.json" {
			src = filepath.Join(filepath.Dir(configPath), f)
		}
		if _, err := os.Stat(src); err != nil {
			if f == "tokenizer.json" {
				warnings = append(warnings,
					fmt.Sprintf("no tokenizer.json beside %s: pass --tokenizer so that `ortq generate` and onnxruntime-genai can read prompts", configPath))
			}
			continue
		}
		if err := copyFile(src, filepath.Join(dir, f)); err != nil {
			return nil, nil, err
		}
		copied = append(copied, f)
	}
	return copied, warnings, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
