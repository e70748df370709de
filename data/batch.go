package data

import (
	"errors"
	"fmt"
)

// IgnoreIndex is the label value the loss skips (torch CrossEntropyLoss's
// ignore_index default, which Hugging Face uses for padding).
const IgnoreIndex = -100

// DefaultPadMultiple rounds padded lengths so ORT sees few distinct shapes
// (each new shape can trigger re-planning/kernel selection) and GEMMs stay
// aligned.
const DefaultPadMultiple = 16

// BatchOptions controls micro-batch assembly.
type BatchOptions struct {
	// BatchSize is the number of examples per micro-batch (> 0).
	BatchSize int
	// PadMultiple rounds each batch's sequence length up; 0 means
	// DefaultPadMultiple, 1 disables rounding.
	PadMultiple int
	// MaxLen caps the rounded length (0 = no cap); set it to the model's
	// maximum so rounding never produces positions the model lacks. It never
	// cuts real tokens: a batch whose longest example exceeds it keeps that
	// length.
	MaxLen int
	// PadID fills input ids at padding. Its value does not affect the loss
	// (padding is masked and labelled -100); 0 is always a valid row of the
	// embedding, so it is the default.
	PadID int64
	// DropLast drops an epoch's final partial batch (torch DataLoader's
	// drop_last). Off by default, like the Hugging Face Trainer.
	DropLast bool
}

// PaddedLen is the sequence length of a batch whose longest example has longest tokens:
// rounded up to PadMultiple, capped at MaxLen but never below longest.
func (o BatchOptions) PaddedLen(longest int) int {
	mult := o.PadMultiple
	if mult == 0 {
		mult = DefaultPadMultiple
	}
	s := (longest + mult - 1) / mult * mult
	if o.MaxLen > 0 && s > o.MaxLen {
		s = max(o.MaxLen, longest)
	}
	return s
}

func (o BatchOptions) validate() error {
	if o.BatchSize <= 0 {
		return fmt.Errorf("micro-batch size %d must be positive", o.BatchSize)
	}
	if o.PadMultiple < 0 {
		return fmt.Errorf("pad multiple %d must be ≥ 0", o.PadMultiple)
	}
	return nil
}

// Batch is one padded micro-batch in the layout the graphs take: row-major
// [Rows, SeqLen] int64 tensors, right padding.
type Batch struct {
	Rows, SeqLen int
	InputIDs     []int64 // [Rows*SeqLen]
	// AttentionMask is 0 at padding and the document's id within the row (1, 2, …) at
	// real tokens: all 1 unless documents are packed apart (Options.Isolate), where the
	// graphs (manifest.Manifest.DocumentIDs) let no token attend to another document.
	AttentionMask []int64
	// PositionIDs restart at 0 with each document of a row (0..SeqLen-1 for one).
	PositionIDs []int64
	Labels      []int64 // input ids, IgnoreIndex at padding and documents' first tokens; the graph shifts
	// Tokens is the number of labels the shifted loss counts: labels at
	// positions 1..SeqLen-1 of each row that are not IgnoreIndex. Token-
	// weighted accumulation divides the summed loss by the total of these.
	Tokens int
	// Examples are the indices of the rows' examples in the slice the batch
	// was built from (for debugging and tests).
	Examples []int
}

// Positions returns PositionIDs, or 0..SeqLen-1 in every row for a batch built without them.
func (b Batch) Positions() []int64 {
	if b.PositionIDs != nil {
		return b.PositionIDs
	}
	pos := make([]int64, b.Rows*b.SeqLen)
	for i := range pos {
		pos[i] = int64(i % b.SeqLen)
	}
	return pos
}

// Shape returns the [Rows, SeqLen] shape for ORT tensors.
func (b Batch) Shape() []int64 { return []int64{int64(b.Rows), int64(b.SeqLen)} }

// MakeBatch pads examples[idx...] into one Batch.
func MakeBatch(examples []Example, idx []int, opts BatchOptions) (Batch, error) {
	if err := opts.validate(); err != nil {
		return Batch{}, err
	}
	if len(idx) == 0 {
		return Batch{}, errors.New("MakeBatch: no examples")
	}
	longest := 0
	for _, i := range idx {
		if i < 0 || i >= len(examples) {
			return Batch{}, fmt.Errorf("MakeBatch: example index %d out of range [0, %d)", i, len(examples))
		}
		longest = max(longest, len(examples[i]))
	}
	if longest == 0 {
		return Batch{}, errors.New("MakeBatch: all examples are empty")
	}
	s := opts.PaddedLen(longest)
	b := Batch{
		Rows:          len(idx),
		SeqLen:        s,
		InputIDs:      make([]int64, len(idx)*s),
		AttentionMask: make([]int64, len(idx)*s),
		PositionIDs:   make([]int64, len(idx)*s),
		Labels:        make([]int64, len(idx)*s),
		Examples:      append([]int(nil), idx...),
	}
	for r, i := range idx {
		fillRow(&b, r, examples[i], opts.PadID)
		// Counted from the labels rather than as len(ex)-1 so the definition
		// stays right if masking rules change (e.g. prompt masking).
		row := r * s
		for j := 1; j < s; j++ {
			if b.Labels[row+j] != IgnoreIndex {
				b.Tokens++
			}
		}
	}
	return b, nil
}

// fillRow writes example ex into row r of b. Each document of the row (one, unless ex holds
// Options.Isolate's marks) gets its id 1, 2, … in the attention mask, positions from 0 and
// IgnoreIndex at its first token, which the previous document's last token would otherwise
// predict; padding has id 0, no label, and the positions of its columns.
func fillRow(b *Batch, r int, ex Example, padID int64) {
	row := r * b.SeqLen
	doc, start := int64(1), 0
	for j := 0; j < b.SeqLen; j++ {
		if j >= len(ex) {
			b.InputIDs[row+j], b.Labels[row+j], b.PositionIDs[row+j] = padID, IgnoreIndex, int64(j)
			continue
		}
		tok := int64(ex.ID(j))
		b.InputIDs[row+j], b.Labels[row+j] = tok, tok
		if !ex.Trained(j) { // prompt masking: no loss on this token
			b.Labels[row+j] = IgnoreIndex
		}
		if j > 0 && ex.StartsDocument(j) {
			doc, start = doc+1, j
			b.Labels[row+j] = IgnoreIndex
		}
		b.AttentionMask[row+j], b.PositionIDs[row+j] = doc, int64(j-start)
	}
}

// Batches splits examples, in order, into padded micro-batches; used for
// evaluation, where order does not matter and no shuffling is wanted.
func Batches(examples []Example, opts BatchOptions) ([]Batch, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	var out []Batch
	for start := 0; start < len(examples); start += opts.BatchSize {
		end := min(start+opts.BatchSize, len(examples))
		if opts.DropLast && end-start < opts.BatchSize {
			break
		}
		idx := make([]int, end-start)
		for k := range idx {
			idx[k] = start + k
		}
		b, err := MakeBatch(examples, idx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Position is where an Iterator stands: the next batch starts at Index in the
// shuffled order of Epoch, which is derived from Seed and Epoch only. Saving
// it in a checkpoint is enough to resume with identical batches.
type Position struct {
	Epoch int    `json:"epoch"`
	Index int    `json:"index"` // examples of this epoch already consumed
	Seed  uint64 `json:"seed"`
}

// Iterator yields shuffled training micro-batches forever, epoch after epoch.
// A loop bounded by epochs runs `for it.Position().Epoch < epochs`; the
// position rolls over to (epoch+1, 0) as soon as an epoch's last batch is
// taken, so that test is exact.
type Iterator struct {
	examples []Example
	opts     BatchOptions
	pos      Position
	perm     []int // order for pos.Epoch; nil until needed
	permFor  int
}

// NewIterator starts at epoch 0, index 0.
func NewIterator(examples []Example, opts BatchOptions, seed uint64) (*Iterator, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if len(examples) == 0 {
		return nil, errors.New("no training examples")
	}
	if opts.DropLast && len(examples) < opts.BatchSize {
		return nil, fmt.Errorf("%d training examples are fewer than one micro-batch of %d with drop-last", len(examples), opts.BatchSize)
	}
	for i, e := range examples {
		if len(e) == 0 {
			return nil, fmt.Errorf("training example %d is empty", i)
		}
	}
	return &Iterator{examples: examples, opts: opts, pos: Position{Seed: seed}, permFor: -1}, nil
}

// Position returns where the next batch starts.
func (it *Iterator) Position() Position { return it.pos }

// SetPosition moves the iterator (resume). The index must be one the
// iterator can reach: a multiple of the batch size within the epoch.
func (it *Iterator) SetPosition(p Position) error {
	n := len(it.examples)
	if p.Epoch < 0 || p.Index < 0 || p.Index >= n || p.Index%it.opts.BatchSize != 0 {
		return fmt.Errorf("data position epoch %d index %d does not fit %d examples in micro-batches of %d: the data or --micro-batch changed since the checkpoint",
			p.Epoch, p.Index, n, it.opts.BatchSize)
	}
	if it.opts.DropLast && p.Index+it.opts.BatchSize > n {
		return fmt.Errorf("data position index %d is past the last full micro-batch of %d examples", p.Index, n)
	}
	it.pos = p
	it.permFor = -1
	return nil
}

// BatchesPerEpoch is the number of Next calls per epoch.
func (it *Iterator) BatchesPerEpoch() int {
	n, b := len(it.examples), it.opts.BatchSize
	if it.opts.DropLast {
		return n / b
	}
	return (n + b - 1) / b
}

// EpochOrder returns the example order of an epoch (a permutation of
// 0..n-1), a pure function of (seed, epoch).
func EpochOrder(n int, seed uint64, epoch int) []int {
	return permutation(n, newRand(seed, streamEpoch+uint64(epoch)))
}

// Next returns the batch at the current position and advances.
func (it *Iterator) Next() Batch {
	if it.permFor != it.pos.Epoch {
		it.perm = EpochOrder(len(it.examples), it.pos.Seed, it.pos.Epoch)
		it.permFor = it.pos.Epoch
	}
	n, bs := len(it.examples), it.opts.BatchSize
	end := min(it.pos.Index+bs, n)
	b, err := MakeBatch(it.examples, it.perm[it.pos.Index:end], it.opts)
	if err != nil {
		// Options and indices were validated; examples come from Build
		// (≥ 2 tokens), so this is a broken invariant.
		panic("data.Iterator: " + err.Error())
	}
	it.pos.Index = end
	if it.pos.Index >= n || (it.opts.DropLast && it.pos.Index+bs > n) {
		it.pos.Epoch++
		it.pos.Index = 0
	}
	return b
}
