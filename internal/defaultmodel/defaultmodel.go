package defaultmodel

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/internal/fsutil"
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
		if old, err := fsutil.ReadLimited(p, name, int64(len(b))+1); err == nil && bytes.Equal(old, b) {
			continue
		}
		// A unique temporary name and an atomic rename: concurrent extractions (several
		// `ortq prepare --model default` at once on an empty cache) never share a temp.
		if err := fsutil.WriteFile(p, b, 0o644); err != nil {
			return "", "", fmt.Errorf("embedded default model: %w", err)
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
