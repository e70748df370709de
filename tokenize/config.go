package tokenize

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ortq/ortq/internal/fsutil"
)

// fileJSON is the part of a Hugging Face tokenizer.json this package reads. Components are
// kept raw and decoded by type so that an unknown type or field value becomes an error that
// names it, instead of being silently ignored.
type fileJSON struct {
	Version       string          `json:"version"`
	Truncation    json.RawMessage `json:"truncation"`
	Padding       *paddingJSON    `json:"padding"`
	AddedTokens   []addedJSON     `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         modelJSON       `json:"model"`
}

type paddingJSON struct {
	PadID    *int   `json:"pad_id"`
	PadToken string `json:"pad_token"`
}

type addedJSON struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type modelJSON struct {
	Type                    string          `json:"type"`
	Dropout                 *float64        `json:"dropout"`
	UnkToken                *string         `json:"unk_token"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	Vocab                   map[string]int  `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
}

// component is any normalizer / pre-tokenizer / processor / decoder object: its type plus
// the fields used by the types this package supports.
type component struct {
	Type string `json:"type"`
	// Sequence members (the key differs per component kind).
	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Processors    []json.RawMessage `json:"processors"`
	Decoders      []json.RawMessage `json:"decoders"`

	Prepend        string           `json:"prepend"`
	Pattern        *patternJSON     `json:"pattern"`
	Content        json.RawMessage  `json:"content"`
	Behavior       string           `json:"behavior"`
	Invert         bool             `json:"invert"`
	AddPrefixSpace *bool            `json:"add_prefix_space"`
	UseRegex       *bool            `json:"use_regex"`
	Replacement    string           `json:"replacement"`
	PrependScheme  string           `json:"prepend_scheme"`
	Split          *bool            `json:"split"`
	Start          int              `json:"start"`
	Stop           int              `json:"stop"`
	Left           bool             `json:"left"`
	Right          bool             `json:"right"`
	Single         []templatePiece  `json:"single"`
	SpecialTokens  map[string]tmplS `json:"special_tokens"`
	Sep            []any            `json:"sep"`
	Cls            []any            `json:"cls"`
}

type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

type templatePiece struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

type tmplS struct {
	ID  string `json:"id"`
	IDs []int  `json:"ids"`
}

// configJSON is the part of tokenizer_config.json (transformers) that decides BOS/EOS/PAD.
type configJSON struct {
	AddBOS   *bool           `json:"add_bos_token"`
	AddEOS   *bool           `json:"add_eos_token"`
	BOSToken json.RawMessage `json:"bos_token"`
	EOSToken json.RawMessage `json:"eos_token"`
	PadToken json.RawMessage `json:"pad_token"`
}

// tokenString reads a special-token field that is either "text", {"content": "text"} or null.
func tokenString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var o struct {
		Content *string `json:"content"`
	}
	if json.Unmarshal(raw, &o) == nil && o.Content != nil {
		return *o.Content, true
	}
	return "", false
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// Limits of the tokenizer files read (the largest published tokenizer.json files are
// tens of MB; a chat template config a few hundred KB).
const (
	maxTokenizerBytes       = 256 << 20
	maxTokenizerConfigBytes = 16 << 20
)

func readFile(path string) (*fileJSON, *configJSON, error) {
	b, err := fsutil.ReadLimited(path, "tokenizer.json", maxTokenizerBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("tokenize: %w", err)
	}
	var f fileJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, nil, fmt.Errorf("tokenize: %s is not a Hugging Face tokenizer.json: %w", path, err)
	}
	// tokenizer_config.json beside the file decides whether BOS/EOS are added (transformers
	// overrides the post-processor with add_bos_token/add_eos_token) and names BOS/EOS/PAD.
	var cfg *configJSON
	cpath := filepath.Join(filepath.Dir(path), "tokenizer_config.json")
	if cb, err := fsutil.ReadLimited(cpath, "tokenizer_config.json", maxTokenizerConfigBytes); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("tokenize: %w", err)
	} else if err == nil {
		cfg = new(configJSON)
		if err := json.Unmarshal(cb, cfg); err != nil {
			return nil, nil, fmt.Errorf("tokenize: %s: %w", cpath, err)
		}
	}
	return &f, cfg, nil
}

// parseMerges accepts both merges layouts: ["a b", ...] (tokenizers < 0.20) and
// [["a", "b"], ...] (tokenizers >= 0.20, needed when tokens contain spaces).
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok || strings.Contains(b, " ") {
				return nil, fmt.Errorf("model.merges[%d] = %q: want two tokens separated by one space", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("model.merges: neither a list of strings nor of pairs: %w", err)
	}
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("model.merges[%d]: want a pair, got %d tokens", i, len(p))
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

func decodeComponent(raw json.RawMessage, field string) (*component, error) {
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return &c, nil
}

// stringContent reads a Replace/Strip "content" that must be a string (Strip's is one char).
func stringContent(raw json.RawMessage, field string) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%s.content: want a string: %w", field, err)
	}
	return s, nil
}

// buildSequence builds the steps of a Sequence component's parts, in order (the parts are
// named list[i] in errors).
func buildSequence[T any](parts []json.RawMessage, list string, build func(json.RawMessage, string) ([]T, error)) ([]T, error) {
	var out []T
	for i, sub := range parts {
		steps, err := build(sub, fmt.Sprintf("%s[%d]", list, i))
		if err != nil {
			return nil, err
		}
		out = append(out, steps...)
	}
	return out, nil
}
