package tokenize

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
)

// Tokenizer encodes and decodes text exactly as Hugging Face tokenizers does for one
// tokenizer.json. It is safe for concurrent use.
type Tokenizer struct {
	path      string
	model     *bpe
	norms     []normalizer
	pre       []preTokenizer
	added     *addedMatcher // tokens matched on the raw text (normalized=false)
	addedNorm *addedMatcher // tokens matched after normalization (normalized=true)
	decoders  []decoder

	prefix, suffix []int32 // ids the post-processor adds around a single sequence

	idToToken []string // model tokens (as in tokenizer.json) and added tokens, by id
	special   []bool   // by id: added token with special=true
	vocabSize int

	bos, eos, pad int // -1 when unknown

	pool sync.Pool // *state
}

// state is per-goroutine scratch: buffers and a word cache, so encoding takes no lock.
type state struct {
	syms   []symbol
	heap   []mergeItem
	pa, pb []piece
	ids    []int32
	cache  map[string][2]int32
	arena  []int32
}

const (
	maxCacheWords = 1 << 17
	maxArena      = 1 << 21
)

func (st *state) remember(w string, ids []int32) {
	if len(st.cache) >= maxCacheWords || len(st.arena)+len(ids) > maxArena {
		clear(st.cache)
		st.arena = st.arena[:0]
	}
	a := int32(len(st.arena))
	st.arena = append(st.arena, ids...)
	// Clone: w is a substring of the caller's text and would keep all of it alive.
	st.cache[strings.Clone(w)] = [2]int32{a, int32(len(st.arena))}
}

// Load reads a Hugging Face tokenizer.json and, if present beside it, tokenizer_config.json.
// Features this package cannot reproduce exactly are reported as errors naming the field.
func Load(path string) (t *Tokenizer, err error) {
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("tokenize: %s: internal error while loading (please report): %v", path, r)
		}
	}()
	f, cfg, err := readFile(path)
	if err != nil {
		return nil, err
	}
	t, err = build(f, cfg)
	if err != nil {
		return nil, fmt.Errorf("tokenize: %s: %w", path, err)
	}
	t.path = path
	return t, nil
}

func build(f *fileJSON, cfg *configJSON) (*Tokenizer, error) {
	if !isNull(f.Truncation) {
		return nil, fmt.Errorf("truncation is set; it is not supported (truncate ids yourself)")
	}
	t := &Tokenizer{bos: -1, eos: -1, pad: -1}
	var err error
	var byteLevel bool
	if t.pre, byteLevel, err = buildPre(f.PreTokenizer, "pre_tokenizer"); err != nil {
		return nil, err
	}
	if t.norms, err = buildNormalizers(f.Normalizer, "normalizer"); err != nil {
		return nil, err
	}
	if t.decoders, err = buildDecoders(f.Decoder, "decoder"); err != nil {
		return nil, err
	}
	if t.model, err = newBPE(&f.Model, byteLevel); err != nil {
		return nil, err
	}

	byContent, err := t.buildIDs(f)
	if err != nil {
		return nil, err
	}
	lookup := func(s string) (int, bool) {
		if id, ok := byContent[s]; ok {
			return id, true
		}
		id, ok := f.Model.Vocab[s]
		return id, ok
	}

	if err := t.buildPost(f.PostProcessor, lookup); err != nil {
		return nil, err
	}
	if err := t.applyConfig(cfg, lookup); err != nil {
		return nil, err
	}
	if t.pad < 0 && f.Padding != nil {
		if f.Padding.PadID != nil {
			t.pad = *f.Padding.PadID
		} else if id, ok := lookup(f.Padding.PadToken); ok {
			t.pad = id
		}
	}
	t.pool.New = func() any { return &state{cache: make(map[string][2]int32, 1024)} }
	return t, nil
}

// buildIDs fills the id table: the model vocab, then the added tokens (which may reuse
// model ids), and their matchers; it returns the added tokens' ids by content.
func (t *Tokenizer) buildIDs(f *fileJSON) (map[string]int, error) {
	maxID := -1
	for _, id := range f.Model.Vocab {
		maxID = max(maxID, id)
	}
	for _, a := range f.AddedTokens {
		maxID = max(maxID, a.ID)
	}
	// Ids must be contiguous (checked below), so an id beyond the number of tokens is an
	// error; checking it first keeps a hostile id from sizing the tables below.
	if n := len(f.Model.Vocab) + len(f.AddedTokens); maxID >= n {
		return nil, fmt.Errorf("ids are not contiguous: id %d, but only %d tokens are defined", maxID, n)
	}
	t.vocabSize = maxID + 1
	t.idToToken = make([]string, t.vocabSize)
	t.special = make([]bool, t.vocabSize)
	have := make([]bool, t.vocabSize)
	for tok, id := range f.Model.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("model.vocab[%q] = %d: negative id", tok, id)
		}
		t.idToToken[id], have[id] = tok, true
	}
	var raw, normd []addedTok
	byContent := map[string]int{}
	for i, a := range f.AddedTokens {
		field := fmt.Sprintf("added_tokens[%d] (%q)", i, a.Content)
		if a.ID < 0 {
			return nil, fmt.Errorf("%s: negative id", field)
		}
		if a.SingleWord {
			return nil, fmt.Errorf("%s: single_word = true is not supported", field)
		}
		t.idToToken[a.ID], have[a.ID] = a.Content, true
		t.special[a.ID] = a.Special
		byContent[a.Content] = a.ID
		at := addedTok{a.Content, int32(a.ID), a.LStrip, a.RStrip}
		if a.Normalized && len(t.norms) > 0 {
			// tokenizers matches these on the normalized text, against normalized content.
			at.content = t.normalize(a.Content)
			normd = append(normd, at)
		} else {
			raw = append(raw, at)
		}
	}
	for id, ok := range have {
		if !ok {
			return nil, fmt.Errorf("ids are not contiguous: no token has id %d", id)
		}
	}
	t.added = newAddedMatcher(raw)
	if len(normd) > 0 {
		t.addedNorm = newAddedMatcher(normd)
	}
	return byContent, nil
}

// buildPost reads the post_processor: the special ids added around a single sequence.
func (t *Tokenizer) buildPost(raw json.RawMessage, lookup func(string) (int, bool)) error {
	if isNull(raw) {
		return nil
	}
	c, err := decodeComponent(raw, "post_processor")
	if err != nil {
		return err
	}
	procs := []*component{c}
	if c.Type == "Sequence" {
		procs = procs[:0]
		for i, sub := range c.Processors {
			p, err := decodeComponent(sub, fmt.Sprintf("post_processor.processors[%d]", i))
			if err != nil {
				return err
			}
			procs = append(procs, p)
		}
	}
	pairID := func(v []any, field string) (int32, error) {
		if len(v) == 2 {
			if n, ok := v[1].(float64); ok {
				return int32(n), nil
			}
		}
		return 0, fmt.Errorf("post_processor.%s: want [token, id]", field)
	}
	for _, p := range procs {
		switch p.Type {
		case "ByteLevel": // only adjusts offsets
		case "TemplateProcessing":
			seen := false
			for i, item := range p.Single {
				switch {
				case item.Sequence != nil:
					if item.Sequence.ID != "A" {
						return fmt.Errorf("post_processor.single[%d]: sequence %q in a single template", i, item.Sequence.ID)
					}
					seen = true
				case item.SpecialToken != nil:
					st, ok := p.SpecialTokens[item.SpecialToken.ID]
					if !ok {
						return fmt.Errorf("post_processor.single[%d]: special token %q missing from special_tokens", i, item.SpecialToken.ID)
					}
					for _, id := range st.IDs {
						if seen {
							t.suffix = append(t.suffix, int32(id))
						} else {
							t.prefix = append(t.prefix, int32(id))
						}
					}
				default:
					return fmt.Errorf("post_processor.single[%d]: want SpecialToken or Sequence", i)
				}
			}
		case "BertProcessing", "RobertaProcessing":
			cls, err := pairID(p.Cls, "cls")
			if err != nil {
				return err
			}
			sep, err := pairID(p.Sep, "sep")
			if err != nil {
				return err
			}
			t.prefix, t.suffix = append(t.prefix, cls), append(t.suffix, sep)
		default:
			return fmt.Errorf("post_processor.type %q is not supported (supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence)", p.Type)
		}
	}
	return nil
}

// applyConfig takes BOS/EOS/PAD from tokenizer_config.json. When it sets add_bos_token or
// add_eos_token explicitly, transformers rebuilds the post-processor from them (bos? $A eos?)
// and so do we; otherwise tokenizer.json's post_processor decides, as in tokenizers. Without
// a config, BOS/EOS are the single special tokens the template puts before/after the text.
func (t *Tokenizer) applyConfig(cfg *configJSON, lookup func(string) (int, bool)) error {
	if cfg == nil {
		if len(t.prefix) == 1 {
			t.bos = int(t.prefix[0])
		}
		if len(t.suffix) == 1 {
			t.eos = int(t.suffix[0])
		}
		return nil
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *int
	}{{"bos_token", cfg.BOSToken, &t.bos}, {"eos_token", cfg.EOSToken, &t.eos}, {"pad_token", cfg.PadToken, &t.pad}} {
		s, ok := tokenString(f.raw)
		if !ok {
			continue
		}
		id, ok := lookup(s)
		if !ok {
			return fmt.Errorf("tokenizer_config.json %s %q is not in the vocabulary", f.name, s)
		}
		*f.dst = id
	}
	if cfg.AddBOS != nil || cfg.AddEOS != nil {
		addBOS := cfg.AddBOS != nil && *cfg.AddBOS
		addEOS := cfg.AddEOS != nil && *cfg.AddEOS
		t.prefix, t.suffix = nil, nil
		if addBOS {
			if t.bos < 0 {
				return fmt.Errorf("tokenizer_config.json: add_bos_token is true but bos_token is not set")
			}
			t.prefix = []int32{int32(t.bos)}
		}
		if addEOS {
			if t.eos < 0 {
				return fmt.Errorf("tokenizer_config.json: add_eos_token is true but eos_token is not set")
			}
			t.suffix = []int32{int32(t.eos)}
		}
	}
	return nil
}

func (t *Tokenizer) normalize(s string) string {
	for _, n := range t.norms {
		s = n(s)
	}
	return s
}

// panicError is the error of a panic while doing what: a regex match that ran out of time
// (regexTimeout), else an internal error.
func (t *Tokenizer) panicError(r any, what string) error {
	if rt, ok := r.(regexTimeout); ok {
		return fmt.Errorf("tokenize: %s: the pattern %q took longer than %v on one text while %s (catastrophic backtracking): fix the regex in that tokenizer.json",
			t.path, rt.pattern, matchTimeout, what)
	}
	return fmt.Errorf("tokenize: %s: internal error %s (please report): %v", t.path, what, r)
}

// Encode returns the ids of text. With addSpecial the post-processor's special tokens (BOS,
// EOS, as tokenizer.json / tokenizer_config.json say) are added. Special-token strings inside
// text always map to their ids, as in tokenizers (split_special_tokens=false).
func (t *Tokenizer) Encode(text string, addSpecial bool) (ids []int, err error) {
	st := t.pool.Get().(*state)
	defer func() {
		if r := recover(); r != nil {
			ids, err = nil, t.panicError(r, fmt.Sprintf("encoding %.40q", text))
			st = &state{cache: map[string][2]int32{}} // drop possibly corrupt scratch
		}
		t.pool.Put(st)
	}()
	out := t.encode(st, text, addSpecial)
	ids = make([]int, len(out))
	for i, id := range out {
		ids[i] = int(id)
	}
	return ids, nil
}

func (t *Tokenizer) encode(st *state, text string, addSpecial bool) []int32 {
	out := st.ids[:0]
	if addSpecial {
		out = append(out, t.prefix...)
	}
	t.added.split(text, func(seg string, id int32, first bool) {
		if id >= 0 {
			out = append(out, id)
			return
		}
		seg = t.normalize(seg)
		if t.addedNorm != nil {
			t.addedNorm.split(seg, func(s string, id int32, f bool) {
				if id >= 0 {
					out = append(out, id)
				} else {
					out = t.encodeSegment(st, s, first && f, out)
				}
			})
			return
		}
		out = t.encodeSegment(st, seg, first, out)
	})
	if addSpecial {
		out = append(out, t.suffix...)
	}
	st.ids = out
	return out
}

func (t *Tokenizer) encodeSegment(st *state, seg string, first bool, out []int32) []int32 {
	if seg == "" {
		return out
	}
	pieces := append(st.pa[:0], piece{seg, first})
	buf := st.pb[:0]
	for _, p := range t.pre {
		buf = p.split(pieces, buf[:0])
		pieces, buf = buf, pieces
	}
	for _, pc := range pieces {
		out = t.model.encodeWord(st, pc.s, out)
	}
	st.pa, st.pb = pieces[:0], buf[:0]
	return out
}

// EncodeBatch encodes texts on all cores (GOMAXPROCS goroutines); result i belongs to texts[i].
func (t *Tokenizer) EncodeBatch(texts []string, addSpecial bool) ([][]int, error) {
	out := make([][]int, len(texts))
	errs := make([]error, len(texts))
	var next atomic.Int64
	workers := min(runtime.GOMAXPROCS(0), len(texts))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(texts) {
					return
				}
				out[i], errs[i] = t.Encode(texts[i], addSpecial)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("text %d: %w", i, err)
		}
	}
	return out, nil
}

// Decode returns the text of ids, running tokenizer.json's decoder as tokenizers does. With
// skipSpecial, added tokens marked special are left out. An id outside the vocabulary is an
// error (tokenizers silently drops it).
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) (s string, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = "", t.panicError(r, "decoding")
		}
	}()
	toks := make([]string, 0, len(ids))
	for i, id := range ids {
		if id < 0 || id >= t.vocabSize {
			return "", fmt.Errorf("tokenize: %s: ids[%d] = %d is outside the vocabulary [0, %d)", t.path, i, id, t.vocabSize)
		}
		if skipSpecial && t.special[id] {
			continue
		}
		toks = append(toks, t.idToToken[id])
	}
	if len(t.decoders) == 0 {
		return strings.Join(toks, " "), nil
	}
	for _, d := range t.decoders {
		toks = d(toks)
	}
	return strings.Join(toks, ""), nil
}

// VocabSize is the number of ids (model vocabulary plus added tokens): the embedding rows a
// model needs.
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// BOS is the beginning-of-sequence id from tokenizer_config.json (or the template).
func (t *Tokenizer) BOS() (int, bool) { return t.bos, t.bos >= 0 }

// EOS is the end-of-sequence id from tokenizer_config.json (or the template).
func (t *Tokenizer) EOS() (int, bool) { return t.eos, t.eos >= 0 }

// PAD is the padding id from tokenizer_config.json or tokenizer.json's padding.
func (t *Tokenizer) PAD() (int, bool) { return t.pad, t.pad >= 0 }

// Token returns the vocabulary string of id (as stored in tokenizer.json).
func (t *Tokenizer) Token(id int) (string, bool) {
	if id < 0 || id >= t.vocabSize {
		return "", false
	}
	return t.idToToken[id], true
}
