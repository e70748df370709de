package export

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/ortq/ortq/internal/fsutil"
)

// GenAIConfig is onnxruntime-genai's genai_config.json for a decoder-only model (the
// fields its Llama models carry; see onnxruntime-genai's model builder).
type GenAIConfig struct {
	Model  GenAIModel  `json:"model"`
	Search GenAISearch `json:"search"`
}

// GenAIModel is genai_config.json's "model".
type GenAIModel struct {
	BOS           int          `json:"bos_token_id"`
	ContextLength int          `json:"context_length"`
	Decoder       GenAIDecoder `json:"decoder"`
	EOS           IntList      `json:"eos_token_id"`
	Pad           int          `json:"pad_token_id"`
	Type          string       `json:"type"`
	VocabSize     int          `json:"vocab_size"`
}

// GenAIDecoder is genai_config.json's "model.decoder".
type GenAIDecoder struct {
	SessionOptions map[string]any    `json:"session_options"`
	Filename       string            `json:"filename"`
	HeadSize       int               `json:"head_size"`
	HiddenSize     int               `json:"hidden_size"`
	Inputs         map[string]string `json:"inputs"`
	Outputs        map[string]string `json:"outputs"`
	Heads          int               `json:"num_attention_heads"`
	Layers         int               `json:"num_hidden_layers"`
	KVHeads        int               `json:"num_key_value_heads"`
}

// GenAISearch is genai_config.json's "search" (defaults: greedy).
type GenAISearch struct {
	DoSample             bool    `json:"do_sample"`
	MaxLength            int     `json:"max_length"`
	MinLength            int     `json:"min_length"`
	NumBeams             int     `json:"num_beams"`
	NumReturnSequences   int     `json:"num_return_sequences"`
	PastPresentShareBuff bool    `json:"past_present_share_buffer"`
	RepetitionPenalty    float64 `json:"repetition_penalty"`
	Temperature          float64 `json:"temperature"`
	TopK                 int     `json:"top_k"`
	TopP                 float64 `json:"top_p"`
}

// specialTokens are the token ids of a config.json (eos may be a list).
type specialTokens struct {
	BOS *int            `json:"bos_token_id"`
	EOS json.RawMessage `json:"eos_token_id"`
	Pad *int            `json:"pad_token_id"`
}

// genaiConfig describes the exported decoder of s; shared: the KVShared layout (no
// position_ids input, past_present_share_buffer).
func genaiConfig(s *Source, file string, shared bool) (*GenAIConfig, error) {
	b, err := fsutil.ReadLimited(s.ConfigPath, "config.json", 16<<20)
	if err != nil {
		return nil, err
	}
	var st specialTokens
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", s.ConfigPath, err)
	}
	c := s.Cfg
	m := GenAIModel{ContextLength: c.MaxPositions, Type: "llama", VocabSize: c.VocabSize, EOS: []int{}}
	if st.BOS != nil {
		m.BOS = *st.BOS
	}
	var one int
	if len(st.EOS) > 0 && json.Unmarshal(st.EOS, &one) == nil {
		m.EOS = []int{one}
	} else if len(st.EOS) > 0 {
		json.Unmarshal(st.EOS, &m.EOS)
	}
	m.Pad = -1
	if st.Pad != nil {
		m.Pad = *st.Pad
	} else if len(m.EOS) > 0 {
		m.Pad = m.EOS[0]
	}
	m.Decoder = GenAIDecoder{
		SessionOptions: map[string]any{"log_id": "onnxruntime-genai", "provider_options": []any{}},
		Filename:       file, HeadSize: c.HeadDim, HiddenSize: c.HiddenSize,
		Heads: c.NumHeads, Layers: c.NumLayers, KVHeads: c.NumKVHeads,
		Inputs: map[string]string{"input_ids": InputIDs, "attention_mask": AttentionMask, "position_ids": PositionIDs,
			"past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
		Outputs: map[string]string{"logits": Logits, "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"},
	}
	if shared {
		delete(m.Decoder.Inputs, "position_ids")
	}
	return &GenAIConfig{Model: m, Search: GenAISearch{MaxLength: c.MaxPositions, NumBeams: 1, NumReturnSequences: 1,
		RepetitionPenalty: 1, Temperature: 1, TopK: 1, TopP: 1, PastPresentShareBuff: shared}}, nil
}

// ReadGenAIConfig reads an exported directory's genai_config.json.
func ReadGenAIConfig(path string) (*GenAIConfig, error) {
	b, err := fsutil.ReadLimited(path, GenAIConfigFile, 16<<20)
	if err != nil {
		return nil, err
	}
	return ParseGenAIConfig(path, b)
}

// ParseGenAIConfig parses the genai_config.json bytes read from path (the fuzzing entry
// point). The decoder's file must lie inside the export: a relative path without "..".
func ParseGenAIConfig(path string, b []byte) (*GenAIConfig, error) {
	var c GenAIConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: not a genai_config.json: %w", path, err)
	}
	d := c.Model.Decoder
	if d.Filename == "" || d.Layers <= 0 {
		return nil, fmt.Errorf("%s: no model.decoder.filename or num_hidden_layers: export the model with `ortq export`", path)
	}
	if !filepath.IsLocal(d.Filename) {
		return nil, fmt.Errorf("%s: model.decoder.filename %q is not a file inside the export directory", path, d.Filename)
	}
	return &c, nil
}

// IntList is a JSON list of ints that also reads a single int, as genai and transformers
// write eos_token_id either way.
type IntList []int

// UnmarshalJSON reads an int or a list of ints.
func (l *IntList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	var one int
	if err := json.Unmarshal(b, &one); err == nil {
		*l = IntList{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("eos_token_id: want an int or a list of ints: %w", err)
	}
	*l = many
	return nil
}
