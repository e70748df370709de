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
// int32 halves memory versus int; ids stay below 1<<29 (vocabularies are bounded far
// lower), which leaves two flag bits that travel with the ids through packing, truncation,
// the split, shuffling and checkpoint fingerprints without a parallel slice:
// untrainedBit marks a token the loss does not train on (a prompt token under prompt
// masking), docStartBit the first token of a document under Options.Isolate (MakeBatch
// turns those into document ids, positions and labels). ID, Trained and StartsDocument
// read them.
type Example []int32

// The flag bits of an Example's entries, above every token id.
const (
	untrainedBit int32 = 1 << 30
	docStartBit  int32 = 1 << 29
	idBits             = docStartBit - 1
)

// ID is the token id at i, without its flags.
func (e Example) ID(i int) int32 { return e[i] & idBits }

// StartsDocument reports whether a document starts at i (marked by Options.Isolate).
func (e Example) StartsDocument(i int) bool { return e[i]&docStartBit != 0 }

// MarkDocumentStart flags the token at i as a document's first, as Options.Isolate does.
func (e Example) MarkDocumentStart(i int) { e[i] |= docStartBit }

// Trained says whether the loss learns the token at i (its label is not IgnoreIndex).
func (e Example) Trained(i int) bool { return e[i]&untrainedBit == 0 }

// Labels is the number of labels of e the shifted loss counts: trained tokens after the
// first that do not start a document (an isolated document's first token is no label of
// the one before).
func (e Example) Labels() int {
	n := 0
	for i := 1; i < len(e); i++ {
		if e.Trained(i) && !e.StartsDocument(i) {
			n++
		}
	}
	return n
}

// Stats describes what Build did, for logs and the run report.
type Stats struct {
	Documents    int `json:"documents"`
	Tokens       int `json:"tokens"`        // tokens including added BOS/EOS
	Examples     int `json:"examples"`      // kept examples before the split
	Truncated    int `json:"truncated"`     // NoPack documents cut to MaxSeqLen
	DroppedShort int `json:"dropped_short"` // examples with < 2 tokens (no loss term)
	// DroppedUntrained counts examples none of whose labels is trained (a conversation
	// without an assistant turn, a completion truncated away).
	DroppedUntrained int `json:"dropped_untrained,omitempty"`
	TrainTokens      int `json:"train_tokens"`
	EvalTokens       int `json:"eval_tokens"`
	// TrainLabels and EvalLabels are the labels the loss counts (trained tokens, after the
	// shift): fewer than the tokens under prompt masking.
	TrainLabels int `json:"train_labels"`
	EvalLabels  int `json:"eval_labels"`
	// Masked says some documents train on part of their tokens only.
	Masked bool `json:"masked,omitempty"`
	// Chat says some documents are conversations the chat template rendered ("messages"
	// records), so prompts meant for the trained model (train --sample-prompt) go through it.
	Chat bool `json:"chat,omitempty"`
}

// Dataset is the result of Build.
type Dataset struct {
	Train []Example
	Eval  []Example
	Stats Stats
}

// Build tokenizes docs, packs or truncates them and splits train/eval.
func Build(docs []Document, enc Encoder, opts Options) (*Dataset, error) {
	maxLen, err := checkBuild(docs, enc, opts)
	if err != nil {
		return nil, err
	}
	ds := &Dataset{}
	ds.Stats.Documents = len(docs)
	examples, err := buildExamples(docs, enc, opts, maxLen, &ds.Stats)
	if err != nil {
		return nil, err
	}
	if len(examples) == 0 && ds.Stats.DroppedUntrained > 0 {
		return nil,
			fmt.Errorf("nothing to train on: no example has a completion or assistant token (documents from %s); check the records, or pass --train-on "+
				"prompt+completion",
				sourcesOf(docs))
	}
	if len(examples) == 0 {
		return nil, fmt.Errorf("data too short: no example has at least 2 tokens after tokenization (documents from %s); add more text", sourcesOf(docs))
	}
	ds.Stats.Examples = len(examples)
	ds.Train, ds.Eval = Split(examples, opts.EvalFraction, opts.Seed)
	for _, e := range ds.Train {
		ds.Stats.TrainTokens += len(e)
		ds.Stats.TrainLabels += e.Labels()
	}
	for _, e := range ds.Eval {
		ds.Stats.EvalTokens += len(e)
		ds.Stats.EvalLabels += e.Labels()
	}
	return ds, nil
}

// checkBuild checks Build's arguments before any tokenization and returns the sequence
// length (opts.MaxSeqLen, or its default).
func checkBuild(docs []Document, enc Encoder, opts Options) (maxLen int, err error) {
	if enc == nil {
		return 0, errors.New("data.Build: nil Encoder")
	}
	maxLen = opts.MaxSeqLen
	if maxLen == 0 {
		maxLen = DefaultMaxSeqLen
	}
	if maxLen < 2 {
		return 0, fmt.Errorf("--max-seq-len %d is too small: a causal-LM example needs at least 2 tokens", maxLen)
	}
	if opts.ModelMaxLen > 0 && maxLen > opts.ModelMaxLen {
		return 0, fmt.Errorf("--max-seq-len %d exceeds the model's maximum sequence length %d: lower --max-seq-len", maxLen, opts.ModelMaxLen)
	}
	if opts.EvalFraction < 0 || opts.EvalFraction >= 1 || math.IsNaN(opts.EvalFraction) {
		return 0, fmt.Errorf("eval fraction %v must be in [0, 1)", opts.EvalFraction)
	}
	if len(docs) == 0 {
		return 0, errors.New("no documents to train on: the data files are empty")
	}
	if err := checkID("EOS", opts.EOS, opts.VocabSize); err != nil {
		return 0, err
	}
	if opts.AddBOS {
		if err := checkID("BOS", opts.BOS, opts.VocabSize); err != nil {
			return 0, err
		}
	}
	return maxLen, nil
}

// buildExamples tokenizes every document and makes the examples: each document cut to
// maxLen (NoPack), or all of them packed into blocks of maxLen and a shorter tail. Examples
// with fewer than 2 tokens or no trained label are dropped and counted in st.
func buildExamples(docs []Document, enc Encoder, opts Options, maxLen int, st *Stats) ([]Example, error) {
	var examples []Example
	var stream []int32 // packing buffer
	for _, d := range docs {
		seq, err := tokenizeDocument(d, enc, opts)
		if err != nil {
			return nil, err
		}
		st.Tokens += len(seq)
		st.Masked = st.Masked || d.Trained != nil
		st.Chat = st.Chat || d.Templated
		if opts.Isolate && !opts.NoPack {
			seq[0] |= docStartBit
		}
		if opts.NoPack {
			if len(seq) > maxLen {
				seq = seq[:maxLen:maxLen]
				st.Truncated++
			}
			examples = keepExample(examples, seq, st)
			continue
		}
		stream = append(stream, seq...)
		// Emit full blocks as soon as they exist so the buffer stays small.
		for len(stream) >= maxLen {
			if block := Example(append([]int32(nil), stream[:maxLen]...)); block.Labels() > 0 {
				examples = append(examples, block)
			} else {
				st.DroppedUntrained++
			}
			stream = stream[maxLen:]
		}
	}
	if !opts.NoPack && len(stream) > 0 {
		// The short tail is kept (it is padded in its batch) unless it cannot
		// produce a single loss term.
		examples = keepExample(examples, Example(append([]int32(nil), stream...)), st)
	}
	return examples, nil
}

// keepExample appends e to examples unless it has fewer than 2 tokens or no trained label
// (counted in st).
func keepExample(examples []Example, e Example, st *Stats) []Example {
	switch {
	case len(e) < 2:
		st.DroppedShort++
	case e.Labels() == 0:
		st.DroppedUntrained++
	default:
		examples = append(examples, e)
	}
	return examples
}

// tokenizeDocument encodes d with BOS and EOS (unless a chat template placed its own),
// untrained tokens flagged with untrainedBit (see Example).
func tokenizeDocument(d Document, enc Encoder, opts Options) (Example, error) {
	ids, err := enc.Encode(d.Text, false)
	if err != nil {
		return nil, fmt.Errorf("tokenize %s: %w", docName(d), err)
	}
	trained, err := trainedTokens(d, ids, enc)
	if err != nil {
		return nil, err
	}
	seq := make(Example, 0, len(ids)+2)
	if opts.AddBOS && !d.Templated {
		seq = append(seq, mark(int32(opts.BOS), d.Trained == nil))
	}
	for i, id := range ids {
		if id < 0 || id > int(idBits) || (opts.VocabSize > 0 && id >= opts.VocabSize) {
			return nil, fmt.Errorf("tokenize %s: token id %d outside the model vocabulary [0, %d): the tokenizer does not match the model", docName(d), id,
				opts.VocabSize)
		}
		seq = append(seq, mark(int32(id), trained == nil || trained[i]))
	}
	if !d.Templated {
		// EOS ends the completion: trained when the document's last trained range reaches its end.
		last := d.Trained == nil || len(d.Trained) > 0 && d.Trained[len(d.Trained)-1].End == len(d.Text)
		seq = append(seq, mark(int32(opts.EOS), last))
	}
	return seq, nil
}

// mark sets untrainedBit on a token the loss does not train on.
func mark(id int32, trained bool) int32 {
	if trained {
		return id
	}
	return id | untrainedBit
}

// trainedTokens maps d.Trained's byte ranges to tokens (nil: all trained). A tokenizer
// gives no offsets through Encoder, so each boundary is found as TRL finds the prompt's
// end: the text before it is encoded alone, and the boundary is the number of leading
// tokens that encoding shares with the whole's. A token that straddles a boundary (a BPE
// merge across it) is therefore trained at a range's start and not at its end.
func trainedTokens(d Document, ids []int, enc Encoder) ([]bool, error) {
	if d.Trained == nil {
		return nil, nil
	}
	at := func(b int) (int, error) {
		switch b {
		case 0:
			return 0, nil
		case len(d.Text):
			return len(ids), nil
		}
		prefix, err := enc.Encode(d.Text[:b], false)
		if err != nil {
			return 0, fmt.Errorf("tokenize %s: %w", docName(d), err)
		}
		n := 0
		for n < len(prefix) && n < len(ids) && prefix[n] == ids[n] {
			n++
		}
		return n, nil
	}
	trained := make([]bool, len(ids))
	for _, sp := range d.Trained {
		from, err := at(sp.Start)
		if err != nil {
			return nil, err
		}
		to, err := at(sp.End)
		if err != nil {
			return nil, err
		}
		for i := from; i < to; i++ {
			trained[i] = true
		}
	}
	return trained, nil
}

func checkID(what string, id, vocab int) error {
	if id < 0 || id > int(idBits) || (vocab > 0 && id >= vocab) {
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
