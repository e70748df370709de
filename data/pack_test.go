package data

import (
	"slices"
	"testing"
)

// TestIsolatedPackingLayout: documents packed apart get ids 1, 2, … in the attention mask,
// positions from 0 and no label at their first token (the previous document's last token does
// not predict it); a document cut by the block boundary starts the next row as document 1.
// Concatenated, the same rows are one document: mask 1, positions 0.., every token a label.
func TestIsolatedPackingLayout(t *testing.T) {
	docs := []Document{{Text: "ab", Source: "x"}, {Text: "cde", Source: "x"}, {Text: "fg", Source: "x"}}
	const bos, eos = 1, 2
	for _, c := range []struct {
		isolate           bool
		mask, pos, labels []int64
		tokens            int
	}{
		// Rows of 8: [1 a b 2 1 c d e] [2 1 f g 2]; ids are bytes + 10 (byteEncoder).
		{true, []int64{1, 1, 1, 1, 2, 2, 2, 2, 1, 2, 2, 2, 2, 0, 0, 0},
			[]int64{0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 2, 3, 5, 6, 7},
			[]int64{1, 'a' + 10, 'b' + 10, 2, -100, 'c' + 10, 'd' + 10, 'e' + 10, 2, -100, 'f' + 10, 'g' + 10, 2, -100, -100, -100}, 6 + 3},
		{false, []int64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
			[]int64{0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7},
			[]int64{1, 'a' + 10, 'b' + 10, 2, 1, 'c' + 10, 'd' + 10, 'e' + 10, 2, 1, 'f' + 10, 'g' + 10, 2, -100, -100, -100}, 7 + 4},
	} {
		ds, err := Build(docs, byteEncoder{}, Options{MaxSeqLen: 8, AddBOS: true, BOS: bos, EOS: eos, Isolate: c.isolate})
		if err != nil {
			t.Fatal(err)
		}
		b, err := MakeBatch(ds.Train, []int{0, 1}, BatchOptions{BatchSize: 2, PadMultiple: 8})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(b.AttentionMask, c.mask) || !slices.Equal(b.PositionIDs, c.pos) || !slices.Equal(b.Labels, c.labels) || b.Tokens != c.tokens {
			t.Errorf("isolate=%v:\nmask   %v want %v\npos    %v want %v\nlabels %v want %v\ntokens %d want %d", c.isolate,
				b.AttentionMask, c.mask, b.PositionIDs, c.pos, b.Labels, c.labels, b.Tokens, c.tokens)
		}
		if b.InputIDs[4] != bos || b.InputIDs[9] != bos {
			t.Errorf("isolate=%v: input ids %v keep a document-start mark", c.isolate, b.InputIDs)
		}
	}
}
