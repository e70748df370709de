package hfimport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
)

// MaxConfigBytes bounds config.json: real ones are a few kB.
const MaxConfigBytes = 1 << 20

// Rope describes the rotary embedding: type "default", "linear" or "llama3" and its fields.
type Rope struct {
	Type           string  `json:"rope_type"`
	Theta          float64 `json:"rope_theta"`
	Factor         float64 `json:"factor,omitempty"`
	LowFreqFactor  float64 `json:"low_freq_factor,omitempty"`
	HighFreqFactor float64 `json:"high_freq_factor,omitempty"`
	OriginalMaxPos int     `json:"original_max_position_embeddings,omitempty"`
}

// Config is the part of a Hugging Face LlamaConfig the graph depends on. Missing fields take
// LlamaConfig's defaults, as transformers does when it loads the file.
type Config struct {
	Architectures     []string
	VocabSize         int
	HiddenSize        int
	IntermediateSize  int
	NumLayers         int
	NumHeads          int
	NumKVHeads        int
	HeadDim           int
	RMSNormEps        float64
	Rope              Rope
	TieWordEmbeddings bool
	AttentionBias     bool
	MLPBias           bool
	MaxPositions      int
	HiddenAct         string
	InitializerRange  float64
	// DType is the checkpoint's declared dtype ("dtype" or "torch_dtype"), informational.
	DType string
}

// rawConfig mirrors config.json with pointers so absent and null fields can be told from zero.
type rawConfig struct {
	Architectures     []string       `json:"architectures"`
	ModelType         string         `json:"model_type"`
	VocabSize         *int           `json:"vocab_size"`
	HiddenSize        *int           `json:"hidden_size"`
	IntermediateSize  *int           `json:"intermediate_size"`
	NumLayers         *int           `json:"num_hidden_layers"`
	NumHeads          *int           `json:"num_attention_heads"`
	NumKVHeads        *int           `json:"num_key_value_heads"`
	HeadDim           *int           `json:"head_dim"`
	RMSNormEps        *float64       `json:"rms_norm_eps"`
	RopeTheta         *float64       `json:"rope_theta"`
	RopeScaling       map[string]any `json:"rope_scaling"`
	RopeParameters    map[string]any `json:"rope_parameters"`
	TieWordEmbeddings *bool          `json:"tie_word_embeddings"`
	AttentionBias     *bool          `json:"attention_bias"`
	MLPBias           *bool          `json:"mlp_bias"`
	MaxPositions      *int           `json:"max_position_embeddings"`
	HiddenAct         *string        `json:"hidden_act"`
	InitializerRange  *float64       `json:"initializer_range"`
	DType             string         `json:"dtype"`
	TorchDType        string         `json:"torch_dtype"`
	QuantConfig       map[string]any `json:"quantization_config"`
}

// LoadConfig reads and validates a config.json.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("config %q not found: a Hugging Face checkpoint directory holds config.json beside its *.safetensors", path)
		}
		return nil, fmt.Errorf("config %q: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config %q: %w", path, err)
	}
	if len(b) > MaxConfigBytes {
		return nil, fmt.Errorf("config %q: larger than %d bytes: not a model config", path, MaxConfigBytes)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %q: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses config.json bytes (v4 `rope_theta`/`rope_scaling` or v5
// `rope_parameters` spelling) and validates the result.
func ParseConfig(b []byte) (*Config, error) {
	var r rawConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	switch {
	case len(r.Architectures) > 0:
		if !slices.Contains(r.Architectures, "LlamaForCausalLM") {
			return nil, fmt.Errorf("architectures %q: only LlamaForCausalLM is supported", r.Architectures)
		}
	case r.ModelType != "llama":
		return nil, fmt.Errorf("model_type %q without architectures: only LlamaForCausalLM (model_type \"llama\") is supported", r.ModelType)
	}
	if r.ModelType != "" && r.ModelType != "llama" {
		return nil, fmt.Errorf("model_type %q: only \"llama\" is supported", r.ModelType)
	}
	if len(r.QuantConfig) > 0 {
		return nil, fmt.Errorf("quantization_config is set: pre-quantized checkpoints are not supported; use the 16/32-bit checkpoint (ortq prepare quantizes it)")
	}
	c := &Config{Architectures: r.Architectures, DType: r.DType}
	if c.DType == "" {
		c.DType = r.TorchDType
	}
	intOr := func(p *int, d int) int {
		if p == nil {
			return d
		}
		return *p
	}
	fOr := func(p *float64, d float64) float64 {
		if p == nil {
			return d
		}
		return *p
	}
	bOr := func(p *bool, d bool) bool {
		if p == nil {
			return d
		}
		return *p
	}
	// Defaults: transformers' LlamaConfig.
	c.VocabSize = intOr(r.VocabSize, 32000)
	c.HiddenSize = intOr(r.HiddenSize, 4096)
	c.IntermediateSize = intOr(r.IntermediateSize, 11008)
	c.NumLayers = intOr(r.NumLayers, 32)
	c.NumHeads = intOr(r.NumHeads, 32)
	c.NumKVHeads = intOr(r.NumKVHeads, c.NumHeads)
	if c.NumHeads > 0 {
		c.HeadDim = intOr(r.HeadDim, c.HiddenSize/c.NumHeads)
	}
	c.RMSNormEps = fOr(r.RMSNormEps, 1e-6)
	c.TieWordEmbeddings = bOr(r.TieWordEmbeddings, false)
	c.AttentionBias = bOr(r.AttentionBias, false)
	c.MLPBias = bOr(r.MLPBias, false)
	c.MaxPositions = intOr(r.MaxPositions, 2048)
	c.HiddenAct = "silu"
	if r.HiddenAct != nil {
		c.HiddenAct = *r.HiddenAct
	}
	c.InitializerRange = fOr(r.InitializerRange, 0.02)

	rope := r.RopeParameters
	if rope == nil {
		rope = r.RopeScaling
	}
	c.Rope = Rope{Type: "default", Theta: fOr(r.RopeTheta, 10000)}
	if rope != nil {
		if err := parseRope(rope, &c.Rope); err != nil {
			return nil, err
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func parseRope(m map[string]any, rp *Rope) error {
	num := func(k string) (float64, bool, error) {
		v, ok := m[k]
		if !ok || v == nil {
			return 0, false, nil
		}
		f, ok := v.(float64)
		if !ok {
			return 0, false, fmt.Errorf("rope field %q = %v: want a number", k, v)
		}
		return f, true, nil
	}
	t, _ := m["rope_type"].(string)
	if t == "" {
		t, _ = m["type"].(string) // transformers < 4.43 spelling
	}
	if t == "" {
		t = "default"
	}
	rp.Type = t
	if v, ok, err := num("rope_theta"); err != nil {
		return err
	} else if ok {
		rp.Theta = v
	}
	var err error
	get := func(k string, dst *float64) {
		if err != nil {
			return
		}
		v, ok, e := num(k)
		if e != nil {
			err = e
		} else if ok {
			*dst = v
		}
	}
	get("factor", &rp.Factor)
	get("low_freq_factor", &rp.LowFreqFactor)
	get("high_freq_factor", &rp.HighFreqFactor)
	var orig float64
	get("original_max_position_embeddings", &orig)
	rp.OriginalMaxPos = int(orig)
	return err
}

// maxConfigSize bounds every size in config.json.
const maxConfigSize = 1 << 24

// Validate checks sizes and the supported feature set; errors name the field.
func (c *Config) Validate() error {
	pos := []struct {
		name string
		v    int
	}{
		{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumLayers}, {"num_attention_heads", c.NumHeads}, {"num_key_value_heads", c.NumKVHeads},
		{"head_dim", c.HeadDim}, {"max_position_embeddings", c.MaxPositions},
	}
	// The upper bound (2^24, 16M) is far above any Llama's sizes and keeps every product
	// of two of them (a weight's element count) well inside int64.
	for _, p := range pos {
		if p.v <= 0 || p.v > maxConfigSize {
			return fmt.Errorf("%s = %d: must be between 1 and %d", p.name, p.v, maxConfigSize)
		}
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return fmt.Errorf("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumHeads, c.NumKVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("head_dim %d: rotary embedding needs an even head dimension", c.HeadDim)
	}
	if c.HiddenAct != "silu" {
		return fmt.Errorf("hidden_act %q: only \"silu\" (Llama) is supported", c.HiddenAct)
	}
	if !(c.RMSNormEps > 0) || math.IsInf(c.RMSNormEps, 0) {
		return fmt.Errorf("rms_norm_eps %g: must be positive", c.RMSNormEps)
	}
	if !(c.Rope.Theta > 0) || math.IsInf(c.Rope.Theta, 0) {
		return fmt.Errorf("rope_theta %g: must be positive", c.Rope.Theta)
	}
	switch c.Rope.Type {
	case "default":
	case "linear":
		if !(c.Rope.Factor > 0) {
			return fmt.Errorf("rope scaling %q: factor %g must be positive", c.Rope.Type, c.Rope.Factor)
		}
	case "llama3":
		r := c.Rope
		if !(r.Factor > 0) || !(r.LowFreqFactor > 0) || !(r.HighFreqFactor > r.LowFreqFactor) || r.OriginalMaxPos <= 0 {
			return fmt.Errorf("rope scaling llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0 (got %+v)", r)
		}
	default:
		return fmt.Errorf("rope type %q is not supported (default, linear and llama3 are)", c.Rope.Type)
	}
	return nil
}

// JSON renders the config the way transformers 4 and 5 both read it (rope_theta +
// rope_scaling), for `ortq synth`'s config.json.
func (c *Config) JSON() []byte {
	m := map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"vocab_size":              c.VocabSize,
		"hidden_size":             c.HiddenSize,
		"intermediate_size":       c.IntermediateSize,
		"num_hidden_layers":       c.NumLayers,
		"num_attention_heads":     c.NumHeads,
		"num_key_value_heads":     c.NumKVHeads,
		"head_dim":                c.HeadDim,
		"rms_norm_eps":            c.RMSNormEps,
		"rope_theta":              c.Rope.Theta,
		"tie_word_embeddings":     c.TieWordEmbeddings,
		"attention_bias":          c.AttentionBias,
		"mlp_bias":                c.MLPBias,
		"max_position_embeddings": c.MaxPositions,
		"hidden_act":              c.HiddenAct,
		"initializer_range":       c.InitializerRange,
		"bos_token_id":            1,
		"eos_token_id":            2,
	}
	if c.DType != "" {
		m["torch_dtype"] = c.DType
	}
	if c.Rope.Type != "default" {
		r := map[string]any{"rope_type": c.Rope.Type, "factor": c.Rope.Factor}
		if c.Rope.Type == "llama3" {
			r["low_freq_factor"] = c.Rope.LowFreqFactor
			r["high_freq_factor"] = c.Rope.HighFreqFactor
			r["original_max_position_embeddings"] = c.Rope.OriginalMaxPos
		}
		m["rope_scaling"] = r
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}

// Params counts the model's parameters (embedding and lm_head counted once when tied).
func (c *Config) Params() int64 {
	h, i, v := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.VocabSize)
	q, kv := int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim)
	layer := h*q + 2*h*kv + q*h + 3*h*i + 2*h
	if c.AttentionBias {
		layer += q + 2*kv + h
	}
	if c.MLPBias {
		layer += 2*i + h
	}
	n := v*h + int64(c.NumLayers)*layer + h
	if !c.TieWordEmbeddings {
		n += v * h
	}
	return n
}

var presets = map[string]Config{
	// tiny: seconds on a CPU; vocab 3072 matches artifacts/default's tokenizer.
	"tiny": {VocabSize: 3072, HiddenSize: 64, IntermediateSize: 128, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, HeadDim: 16,
		RMSNormEps: 1e-5, TieWordEmbeddings: true, MaxPositions: 2048,
		Rope: Rope{Type: "llama3", Theta: 500000, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 256}},
	// meta-llama/Llama-3.2-1B config.json.
	"llama-3.2-1b": {VocabSize: 128256, HiddenSize: 2048, IntermediateSize: 8192, NumLayers: 16, NumHeads: 32, NumKVHeads: 8, HeadDim: 64,
		RMSNormEps: 1e-5, TieWordEmbeddings: true, MaxPositions: 131072,
		Rope: Rope{Type: "llama3", Theta: 500000, Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 8192}},
	// meta-llama/Llama-3.2-3B config.json.
	"llama-3.2-3b": {VocabSize: 128256, HiddenSize: 3072, IntermediateSize: 8192, NumLayers: 28, NumHeads: 24, NumKVHeads: 8, HeadDim: 128,
		RMSNormEps: 1e-5, TieWordEmbeddings: true, MaxPositions: 131072,
		Rope: Rope{Type: "llama3", Theta: 500000, Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 8192}},
	// meta-llama/Llama-3.1-8B config.json.
	"llama-3.1-8b": {VocabSize: 128256, HiddenSize: 4096, IntermediateSize: 14336, NumLayers: 32, NumHeads: 32, NumKVHeads: 8, HeadDim: 128,
		RMSNormEps: 1e-5, TieWordEmbeddings: false, MaxPositions: 131072,
		Rope: Rope{Type: "llama3", Theta: 500000, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 8192}},
}

// PresetNames lists the presets of `ortq synth`.
func PresetNames() []string {
	out := make([]string, 0, len(presets))
	for k := range presets {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Preset returns a copy of a named preset's config.
func Preset(name string) (*Config, error) {
	p, ok := presets[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("unknown preset %q: use one of %s", name, strings.Join(PresetNames(), ", "))
	}
	c := p
	c.Architectures = []string{"LlamaForCausalLM"}
	c.HiddenAct = "silu"
	c.InitializerRange = 0.02
	return &c, nil
}
