package train

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train/optim"
)

// LoadInitAdapter reads a PEFT adapter directory (adapter_config.json and
// adapter_model.safetensors, as PEFT's save_pretrained and ortq train write them) for
// `train --init-adapter` and checks it against the artifacts: LoRA type, r, α, target
// modules, and every LoRA tensor's name and shape, with nothing left over. It returns the
// values by PEFT name, as float32. An error names the file and the mismatch.
func LoadInitAdapter(dir string, man *manifest.Manifest) (map[string][]float32, error) {
	cfgPath := filepath.Join(dir, "adapter_config.json")
	wPath := filepath.Join(dir, "adapter_model.safetensors")
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("--init-adapter: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("--init-adapter %q: pass the PEFT adapter directory (adapter_config.json + adapter_model.safetensors)", dir)
	}
	if err := man.CheckAdapterConfig(cfgPath); err != nil {
		return nil, fmt.Errorf("--init-adapter: %w", err)
	}
	f, err := safetensors.ReadFile(wPath)
	if err != nil {
		return nil, fmt.Errorf("--init-adapter: %w", err)
	}
	out, err := man.AdapterValues(wPath, f)
	if err != nil {
		return nil, fmt.Errorf("--init-adapter: %w", err)
	}
	return out, nil
}

// LoadInitParams is LoadInitAdapter's values as Params in the manifest's order.
func LoadInitParams(dir string, man *manifest.Manifest) ([]optim.Param, error) {
	v, err := LoadInitAdapter(dir, man)
	if err != nil {
		return nil, err
	}
	ps := make([]optim.Param, 0, len(man.Params))
	for _, p := range man.Params {
		ps = append(ps, optim.Param{Name: p.Name, Data: v[p.Name]})
	}
	return ps, nil
}
