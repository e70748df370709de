package export

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzGenAIConfig: ParseGenAIConfig never panics; what it accepts names a decoder file
// inside the export (no "..", not absolute) and at least one layer.
func FuzzGenAIConfig(f *testing.F) {
	good, _ := json.Marshal(&GenAIConfig{Model: GenAIModel{Decoder: GenAIDecoder{Filename: ModelFile, Layers: 2}, EOS: IntList{2}}})
	f.Add(good)
	f.Add([]byte(strings.Replace(string(good), `"model.onnx"`, `"../x/model.onnx"`, 1)))
	f.Add([]byte(strings.Replace(string(good), `"model.onnx"`, `"/etc/model.onnx"`, 1)))
	f.Add([]byte(strings.Replace(string(good), `"eos_token_id":[2]`, `"eos_token_id":2`, 1)))
	f.Add([]byte(`{"model":{"eos_token_id":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseGenAIConfig("genai_config.json", b)
		if err != nil {
			return
		}
		if d := c.Model.Decoder; !filepath.IsLocal(d.Filename) || d.Layers <= 0 {
			t.Fatalf("accepted decoder %q with %d layers", d.Filename, d.Layers)
		}
	})
}

// TestGenAIConfigChecks (issue 26 minor items): a decoder file outside the export is
// refused; a scalar eos_token_id is read as genai writes it.
func TestGenAIConfigChecks(t *testing.T) {
	for _, c := range []struct {
		json string
		eos  []int
		ok   bool
	}{
		{`{"model":{"decoder":{"filename":"model.onnx","num_hidden_layers":2},"eos_token_id":[2,3]}}`, []int{2, 3}, true},
		{`{"model":{"decoder":{"filename":"model.onnx","num_hidden_layers":2},"eos_token_id":2}}`, []int{2}, true},
		{`{"model":{"decoder":{"filename":"../x/model.onnx","num_hidden_layers":2}}}`, nil, false},
		{`{"model":{"decoder":{"filename":"/x/model.onnx","num_hidden_layers":2}}}`, nil, false},
	} {
		g, err := ParseGenAIConfig("g.json", []byte(c.json))
		if (err == nil) != c.ok || (err == nil && len(g.Model.EOS) != len(c.eos)) {
			t.Errorf("%s: %v %v", c.json, g, err)
		}
	}
}
