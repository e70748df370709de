package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/generate"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// sampleModel decodes greedily with a run's current LoRA values. The artifacts' eval graph
// returns the loss only (its logits are consumed by the loss, chunked), so the logits come
// from the decoder `ortq export --format onnx-adapter` writes: the same 4-bit weights and
// LoRA arithmetic, with the LoRA tensors as graph inputs and a KV cache. It is exported once,
// when the run starts, into a hidden directory in --out (the base weights are written once:
// about the size of weights.bin); each round writes the current values as an .onnx_adapter
// (a few MB) and opens the decoder on the run's first device, through `ortq generate`'s
// code, and closes it after, so that no second copy of the weights stays in device memory
// between rounds (as the evaluation session does with train.EngineOptions.LazyEval).
type sampleModel struct {
	tmp  string // the hidden directory in --out
	dir  string // the export in it
	man  *manifest.Manifest
	dt   int32 // the export's float type, which its adapter file holds
	opts ortrun.Options
}

// sampleExportPrefix names sampleModel's directory in --out; a run killed before it
// removed its own leaves one, which the next train in that --out removes (trainSampling).
const sampleExportPrefix = ".sample-export-"

// openSampleModel exports the artifacts' decoder with LoRA inputs into out.
func openSampleModel(artifacts, out string, man *manifest.Manifest, opts ortrun.Options) (*sampleModel, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(out, sampleExportPrefix)
	if err != nil {
		return nil, err
	}
	s := &sampleModel{tmp: tmp, dir: filepath.Join(tmp, "model"), man: man, opts: opts}
	// The graph has the LoRA tensors as inputs whatever adapter it is exported with, so the
	// artifacts' own lora_init serves; its values are replaced before every round.
	if _, err := export.Run(export.Options{Artifacts: artifacts, Adapter: filepath.Join(artifacts, man.LoRAInit), Out: s.dir,
		Format: export.FormatONNXAdapter}); err != nil {
		s.close()
		return nil, fmt.Errorf("exporting the decoder to sample with (as `ortq export --format onnx-adapter` does): %w", err)
	}
	ps, err := export.ReadAdapterFile(filepath.Join(s.dir, export.AdapterFile))
	if err != nil || len(ps) == 0 {
		s.close()
		return nil, fmt.Errorf("reading the exported adapter: %v", err)
	}
	s.dt = ps[0].DType
	// A session of its own, never captured: a CUDA graph replays fixed shapes, and a
	// decode's shapes grow with every token.
	s.opts.CUDAGraph = false
	return s, nil
}

func removeStaleSampleExports(out string) error {
	old, err := filepath.Glob(filepath.Join(out, sampleExportPrefix+"*"))
	if err != nil {
		return err
	}
	for _, d := range old {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return nil
}

// greedy continues each prompt by up to maxNew tokens (stopping at eos or the export's
// EOS) under the LoRA values params, as `ortq generate --ids` does with an export of an
// adapter holding them.
func (s *sampleModel) greedy(params map[string][]float32, prompts [][]int64, maxNew int, eos []int) ([][]int64, error) {
	path, err := s.writeAdapter(params)
	if err != nil {
		return nil, err
	}
	m, err := generate.Open(s.dir, s.opts)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if err := m.UseAdapter(path); err != nil {
		return nil, err
	}
	greedy, err := generate.NewSampler(0, 0, 1, 0)
	if err != nil {
		return nil, err
	}
	eos = append(append([]int(nil), m.Config.Model.EOS...), eos...)
	outs := make([][]int64, len(prompts))
	for i, p := range prompts {
		if outs[i], _, err = m.Generate(p, generate.Options{MaxNewTokens: maxNew, Sampler: greedy, EOS: eos}); err != nil {
			return nil, err
		}
	}
	return outs, nil
}

// writeAdapter writes params as the PEFT adapter train saves and as the .onnx_adapter export
// makes of it, and returns the latter's path.
func (s *sampleModel) writeAdapter(params map[string][]float32) (string, error) {
	var ps []optim.Param
	for _, p := range s.man.Params {
		v, ok := params[p.Name]
		if !ok {
			return "", fmt.Errorf("no value for LoRA parameter %q", p.Name)
		}
		ps = append(ps, optim.Param{Name: p.Name, Data: v})
	}
	if err := train.SaveAdapter(s.tmp, s.man, ps); err != nil {
		return "", err
	}
	ad, err := export.LoadAdapter(filepath.Join(s.tmp, "adapter_model.safetensors"), s.man)
	if err != nil {
		return "", err
	}
	path := filepath.Join(s.tmp, "current.onnx_adapter")
	return path, export.WriteAdapterFile(path, ad, s.dt)
}

func (s *sampleModel) close() error { return os.RemoveAll(s.tmp) }
