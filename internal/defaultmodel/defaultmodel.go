package defaultmodel

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
)

//go:embed model.onnx tokenizer.json tokenizer_config.json config.json
var files embed.FS

// Name is the value of --model / --tokenizer that selects the embedded model.
const Name = "default"

// Extract writes the embedded files into dir (created if needed) and returns the paths of
// the model and the tokenizer.
func Extract(dir string) (model, tokenizer string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	for _, name := range []string{"model.onnx", "tokenizer.json", "tokenizer_config.json", "config.json"} {
		b, err := files.ReadFile(name)
		if err != nil {
			return "", "", fmt.Errorf("embedded default model: %w", err)
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Size() == int64(len(b)) {
			continue
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return "", "", err
		}
		if err := os.Rename(tmp, p); err != nil {
			return "", "", err
		}
	}
	return filepath.Join(dir, "model.onnx"), filepath.Join(dir, "tokenizer.json"), nil
}

// Dir is where the embedded files are extracted by default: the user cache directory.
func Dir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "ortq", "default-model")
}
