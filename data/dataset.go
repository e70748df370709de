package data

import (
	"errors"
	"fmt"
	"math"
)

// Encoder is what the tokenize package provides. Build always calls it with
// addSpecial=false and adds BOS/EOS itself from Options: tokenizer.json
// post-processors differ (Llama 2 adds BOS, Llama 3 adds BOS, some add EOS),
// and packing needs exactly one BOS/EOS per document regardless.
type Encoder interface {
	Encode(text string, addSpecial bool) ([]int, error)
}

// DefaultMaxSeqLen is the block length used when Options.MaxSeqLen is 0.
const DefaultMaxSeqLen = 512

// DefaultEvalFraction is the share of examples held out for evaluation.
const DefaultEvalFraction = 0.1

// Options controls tokenization, packing and the train/eval split.
type Options struct {
	// MaxSeqLen is the block length for packing and the truncation length
	// with NoPack; 0 means DefaultMaxSeqLen.
	MaxSeqLen int
	// ModelMaxLen is the model's maximum sequence length (0 = unknown);
	// MaxSeqLen beyond it is an error rather than a silent quality loss.
	ModelMaxLen int
	// VocabSize, when > 0, rejects token ids outside [0, VocabSize) so a
	// tokenizer/model mismatch fails here, not as an out-of-range Gather in ORT.
	VocabSize int
	// AddBOS prepends BOS to every document. BOS is an id, so the zero
	// value of Options cannot express "no BOS" otherwise.
	AddBOS bool
	BOS    int
	// EOS is appended to every document: it separates packed documents and
	// teaches the model to stop.
	EOS int
	// NoPack makes one example per document (truncated to MaxSeqLen)
	// instead of packing all documents into MaxSeqLen blocks.
	NoPack bool
	// Isolate marks where each packed document starts, so that batches give every
	// document of a row its own id in the attention mask, positions from 0 and no label
	// predicted across the boundary (ignored with NoPack, whose rows hold one document).
	Isolate bool
	// EvalFraction of the examples goes to the eval set (0 = no eval set).
	EvalFraction float64
	// Seed drives the train/eval split.
	Seed uint64
}

// DefaultOptions returns the CLI defaults: 512-token blocks, packing, a 90/10
// split. BOS/EOS must still be filled in from the tokenizer.
func DefaultOptions() Options {
	return Options{MaxSeqLen: DefaultMaxSeqLen, EvalFraction: DefaultEvalFraction, AddBOS: true}
}

// Example is one training sequence of token ids (at most MaxSeqLen long).
// int32 halves memory versus int; every real vocabulary fits. With Options.Isolate the
// first token of each document is stored complemented (^id, negative): the boundaries
// travel with the tokens through splits, shuffles and checkpoints' fingerprints, and
// MakeBatch turns them into document ids, positions and labels (Token reads the id).
type Example []int32

// Token is the token id at i, without its document-start mark.
func (e Example) Token(i int) int32 {
	if e[i] < 0 {
		return ^e[i]
	}
	return e[i]
}

// StartsDocument reports whether a document starts at i (marked by Options.Isolate).
func (e Example) StartsDocument(i int) bool { return e[i] < 0 }

// Stats describes what Build did, for logs and the run report.
type Stats struct {
	Documents    int `json:"documents"`
	Tokens       int `json:"tokens"`        // tokens including added BOS/EOS
	Examples     int `json:"examples"`      // kept examples before the split
	Truncated    int `json:"truncated"`     // NoPack documents cut to MaxSeqLen
	DroppedShort int `json:"dropped_short"` // examples with < 2 tokens (no loss term)
	TrainTokens  int `json:"train_tokens"`
	EvalTokens   int `json:"eval_tokens"`
}

// Dataset is the result of Build.
type Dataset struct {
	Train []Example
	Eval  []Example
	Stats Stats
}

// Build tokenizes docs, packs or truncates them and splits train/eval.
func Build(docs []Document, enc Encoder, opts Options) (*Dataset, error) {
	if enc == nil {
		return nil, errors.New("data.Build: nil Encoder")
	}
	maxLen := opts.MaxSeqLen
	if maxLen == 0 {
		maxLen = DefaultMaxSeqLen
	}
	if maxLen < 2 {
		return nil, fmt.Errorf("--max-seq-len %d is too small: a causal-LM example needs at least 2 tokens", maxLen)
	}
	if opts.ModelMaxLen > 0 && maxLen > opts.ModelMaxLen {
		return nil, fmt.Errorf("--max-seq-len %d exceeds the model's maximum sequence length %d: lower --max-seq-len", maxLen, opts.ModelMaxLen)
	}
	if opts.EvalFraction < 0 || opts.EvalFraction >= 1 || math.IsNaN(opts.EvalFraction) {
		return nil, fmt.Errorf("eval fraction %v must be in [0, 1)", opts.EvalFraction)
	}
	if len(docs) == 0 {
		return nil, errors.New("no documents to train on: the data files are empty")
	}
	if err := checkID("EOS", opts.EOS, opts.VocabSize); err != nil {
		return nil, err
	}
	if opts.AddBOS {
		if err := checkID("BOS", opts.BOS, opts.VocabSize); err != nil {
			return nil, err
		}
	}

	ds := &Dataset{}
	ds.Stats.Documents = len(docs)
	var examples []Example
	var stream []int32 // packing buffer
	for _, d := range docs {
		ids, err := enc.Encode(d.Text, false)
		if err != nil {
			return nil, fmt.Errorf("tokenize %s: %w", docName(d), err)
		}
		seq := make([]int32, 0, len(ids)+2)
		if opts.AddBOS {
			seq = append(seq, int32(opts.BOS))
		}
		for _, id := range ids {
			if id < 0 || id > math.MaxInt32 || (opts.VocabSize > 0 && id >= opts.VocabSize) {
				return nil, fmt.Errorf("tokenize %s: token id %d outside the model vocabulary [0, %d): the tokenizer does not match the model", docName(d), id, opts.VocabSize)
			}
			seq = append(seq, int32(id))
		}
		seq = append(seq, int32(opts.EOS))
		ds.Stats.Tokens += len(seq)
		if opts.Isolate && !opts.NoPack {
			seq[0] = ^seq[0]
		}
		if opts.NoPack {
			if len(seq) > maxLen {
				seq = seq[:maxLen:maxLen]
				ds.Stats.Truncated++
			}
			if len(seq) < 2 {
				ds.Stats.DroppedShort++
				continue
			}
			examples = append(examples, Example(seq))
			continue
		}
		stream = append(stream, seq...)
		// Emit full blocks as soon as they exist so the buffer stays small.
		for len(stream) >= maxLen {
			examples = append(examples, Example(append([]int32(nil), stream[:maxLen]...)))
			stream = stream[maxLen:]
		}
	}
	if !opts.NoPack && len(stream) > 0 {
		// The short tail is kept (it is padded in its batch) unless it cannot
		// produce a single loss term.
		if len(stream) >= 2 {
			examples = append(examples, Example(append([]int32(nil), stream...)))
		} else {
			ds.Stats.DroppedShort++
		}
	}
	if len(examples) == 0 {
		return nil, fmt.Errorf("data too short: no example has at least 2 tokens after tokenization (documents from %s); add more text", sourcesOf(docs))
	}
	ds.Stats.Examples = len(examples)
	ds.Train, ds.Eval = Split(examples, opts.EvalFraction, opts.Seed)
	for _, e := range ds.Train {
		ds.Stats.TrainTokens += len(e)
	}
	for _, e := range ds.Eval {
		ds.Stats.EvalTokens += len(e)
	}
	return ds, nil
}

func checkID(what string, id, vocab int) error {
	if id < 0 || id > math.MaxInt32 || (vocab > 0 && id >= vocab) {
		return fmt.Errorf("%s token id %d is outside the model vocabulary [0, %d)", what, id, vocab)
	}
	return nil
}

func docName(d Document) string {
	if d.Line > 0 {
		return fmt.Sprintf("%s:%d", d.Source, d.Line)
	}
	return fmt.Sprintf("%q", d.Source)
}

func sourcesOf(docs []Document) string {
	seen := map[string]bool{}
	var out []string
	for _, d := range docs {
		if !seen[d.Source] {
			seen[d.Source] = true
			out = append(out, d.Source)
		}
	}
	return quoteList(out)
}

// EvalCount is how many of n examples Split holds out: round(frac·n), at least
// one when frac > 0 and n ≥ 2 (a baseline eval needs data), and never all of
// them (training needs data too).
func EvalCount(n int, frac float64) int {
	if frac <= 0 || n < 2 {
		return 0
	}
	k := int(math.Round(frac * float64(n)))
	if k < 1 {
		k = 1
	}
	if k > n-1 {
		k = n - 1
	}
	return k
}

// Split deterministically assigns EvalCount(len(examples), frac) examples,
// chosen by a seeded permutation, to eval and the rest to train. Both keep
// the input order so the result depends only on (examples, frac, seed).
func Split(examples []Example, frac float64, seed uint64) (train, eval []Example) {
	n := len(examples)
	k := EvalCount(n, frac)
	perm := permutation(n, newRand(seed, streamSplit))
	isEval := make([]bool, n)
	for _, i := range perm[:k] {
		isEval[i] = true
	}
	train = make([]Example, 0, n-k)
	eval = make([]Example, 0, k)
	for i, e := range examples {
		if isEval[i] {
			eval = append(eval, e)
		} else {
			train = append(train, e)
		}
	}
	return train, eval
}
