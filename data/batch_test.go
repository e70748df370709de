package data

import (
	"reflect"
	"strings"
	"testing"
)

func TestMakeBatch(t *testing.T) {
	ex := []Example{
		{5, 6, 7}, // 3 tokens
		{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, // 17 tokens
		{9, 9, 9, 9, 9}, // 5 tokens
		{4},             // 1 token: no loss term
	}
	tests := []struct {
		name       string
		idx        []int
		opts       BatchOptions
		wantS      int
		wantTokens int
	}{
		{"round 17 up to 32", []int{0, 1, 2}, BatchOptions{BatchSize: 3}, 32, 2 + 16 + 4},
		{"round 5 up to 16", []int{2, 0}, BatchOptions{BatchSize: 2}, 16, 4 + 2},
		{"multiple 1", []int{2, 0}, BatchOptions{BatchSize: 2, PadMultiple: 1}, 5, 4 + 2},
		{"multiple 8", []int{1}, BatchOptions{BatchSize: 1, PadMultiple: 8}, 24, 16},
		{"cap at MaxLen", []int{1, 0}, BatchOptions{BatchSize: 2, MaxLen: 20}, 20, 16 + 2},
		{"cap never cuts tokens", []int{1}, BatchOptions{BatchSize: 1, MaxLen: 10}, 17, 16},
		{"single token row counts 0", []int{3, 0}, BatchOptions{BatchSize: 2, PadID: 7}, 16, 0 + 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := MakeBatch(ex, tc.idx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if b.Rows != len(tc.idx) || b.SeqLen != tc.wantS {
				t.Fatalf("shape %dx%d, want %dx%d", b.Rows, b.SeqLen, len(tc.idx), tc.wantS)
			}
			if b.Tokens != tc.wantTokens {
				t.Errorf("Tokens = %d, want %d", b.Tokens, tc.wantTokens)
			}
			if !reflect.DeepEqual(b.Shape(), []int64{int64(len(tc.idx)), int64(tc.wantS)}) {
				t.Errorf("Shape() = %v", b.Shape())
			}
			for r, i := range tc.idx {
				e := ex[i]
				for j := 0; j < b.SeqLen; j++ {
					k := r*b.SeqLen + j
					if j < len(e) {
						if b.InputIDs[k] != int64(e[j]) || b.Labels[k] != int64(e[j]) || b.AttentionMask[k] != 1 {
							t.Fatalf("row %d pos %d: ids %d labels %d mask %d, want token %d", r, j, b.InputIDs[k], b.Labels[k], b.AttentionMask[k], e[j])
						}
					} else if b.InputIDs[k] != tc.opts.PadID || b.Labels[k] != IgnoreIndex || b.AttentionMask[k] != 0 {
						t.Fatalf("row %d pos %d: ids %d labels %d mask %d, want padding", r, j, b.InputIDs[k], b.Labels[k], b.AttentionMask[k])
					}
				}
			}
			// Tokens must equal the HF shifted-loss count computed independently.
			count := 0
			for r := 0; r < b.Rows; r++ {
				for _, l := range b.Labels[r*b.SeqLen+1 : (r+1)*b.SeqLen] {
					if l != -100 {
						count++
					}
				}
			}
			if count != b.Tokens {
				t.Errorf("Tokens %d != shifted label count %d", b.Tokens, count)
			}
		})
	}
}

func TestMakeBatchErrors(t *testing.T) {
	ex := []Example{{1, 2}}
	for _, tc := range []struct {
		idx  []int
		opts BatchOptions
		want string
	}{
		{[]int{0}, BatchOptions{}, "micro-batch size 0"},
		{nil, BatchOptions{BatchSize: 1}, "no examples"},
		{[]int{1}, BatchOptions{BatchSize: 1}, "out of range"},
		{[]int{0}, BatchOptions{BatchSize: 1, PadMultiple: -1}, "pad multiple"},
	} {
		if _, err := MakeBatch(ex, tc.idx, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("MakeBatch(%v, %+v) error %v, want %q", tc.idx, tc.opts, err, tc.want)
		}
	}
}

func TestBatchesInOrder(t *testing.T) {
	ex := []Example{{1, 2}, {3, 4, 5}, {6, 7}, {8, 9}, {10, 11}}
	bs, err := Batches(ex, BatchOptions{BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	var got [][]int
	for _, b := range bs {
		got = append(got, b.Examples)
	}
	if want := [][]int{{0, 1}, {2, 3}, {4}}; !reflect.DeepEqual(got, want) {
		t.Errorf("batches %v, want %v", got, want)
	}
	bs, _ = Batches(ex, BatchOptions{BatchSize: 2, DropLast: true})
	if len(bs) != 2 {
		t.Errorf("drop-last gave %d batches, want 2", len(bs))
	}
}

func makeExamples(n int) []Example {
	ex := make([]Example, n)
	for i := range ex {
		ex[i] = Example{int32(i), int32(i), int32(i)}
	}
	return ex
}

func TestIteratorEpochs(t *testing.T) {
	for _, tc := range []struct {
		n, bs      int
		dropLast   bool
		perEpoch   int
		perEpochEx int
	}{
		{10, 3, false, 4, 10},
		{10, 3, true, 3, 9},
		{9, 3, false, 3, 9},
		{1, 7, false, 1, 1},
	} {
		it, err := NewIterator(makeExamples(tc.n), BatchOptions{BatchSize: tc.bs, DropLast: tc.dropLast}, 7)
		if err != nil {
			t.Fatal(err)
		}
		if it.BatchesPerEpoch() != tc.perEpoch {
			t.Errorf("n=%d bs=%d: BatchesPerEpoch %d, want %d", tc.n, tc.bs, it.BatchesPerEpoch(), tc.perEpoch)
		}
		var orders [][]int
		for epoch := 0; epoch < 3; epoch++ {
			seen := map[int]bool{}
			var order []int
			steps := 0
			for it.Position().Epoch == epoch {
				b := it.Next()
				steps++
				for _, i := range b.Examples {
					if seen[i] {
						t.Fatalf("example %d twice in epoch %d", i, epoch)
					}
					seen[i] = true
					order = append(order, i)
				}
			}
			if steps != tc.perEpoch || len(seen) != tc.perEpochEx {
				t.Errorf("n=%d bs=%d epoch %d: %d batches / %d examples, want %d / %d", tc.n, tc.bs, epoch, steps, len(seen), tc.perEpoch, tc.perEpochEx)
			}
			if want := EpochOrder(tc.n, 7, epoch)[:tc.perEpochEx]; !reflect.DeepEqual(order, want) {
				t.Errorf("epoch %d order %v, want %v", epoch, order, want)
			}
			orders = append(orders, order)
		}
		if tc.n > 3 && reflect.DeepEqual(orders[0], orders[1]) {
			t.Errorf("n=%d: epochs 0 and 1 have the same order", tc.n)
		}
	}
}

func TestIteratorResume(t *testing.T) {
	ex := makeExamples(23)
	opts := BatchOptions{BatchSize: 4}
	ref, _ := NewIterator(ex, opts, 99)
	var want []Batch
	var positions []Position
	for i := 0; i < 20; i++ { // crosses three epochs (6 batches each)
		positions = append(positions, ref.Position())
		want = append(want, ref.Next())
	}
	for _, resumeAt := range []int{0, 3, 6, 11, 19} {
		it, _ := NewIterator(ex, opts, 0) // seed comes from the position
		if err := it.SetPosition(positions[resumeAt]); err != nil {
			t.Fatal(err)
		}
		for i := resumeAt; i < 20; i++ {
			if got := it.Next(); !reflect.DeepEqual(got, want[i]) {
				t.Fatalf("resume at %d: batch %d = %v, want %v", resumeAt, i, got.Examples, want[i].Examples)
			}
		}
	}
	if p := positions[6]; p.Epoch != 1 || p.Index != 0 || p.Seed != 99 {
		t.Errorf("position after one epoch = %+v, want {1 0 99}", p)
	}
	it, _ := NewIterator(ex, opts, 0)
	for _, bad := range []Position{{Index: 3}, {Index: 24}, {Epoch: -1}} {
		if err := it.SetPosition(bad); err == nil {
			t.Errorf("SetPosition(%+v) accepted", bad)
		}
	}
}

func TestNewIteratorErrors(t *testing.T) {
	if _, err := NewIterator(nil, BatchOptions{BatchSize: 1}, 0); err == nil {
		t.Error("empty examples accepted")
	}
	if _, err := NewIterator(makeExamples(2), BatchOptions{BatchSize: 3, DropLast: true}, 0); err == nil {
		t.Error("drop-last with fewer examples than a batch accepted")
	}
	if _, err := NewIterator([]Example{{}}, BatchOptions{BatchSize: 1}, 0); err == nil {
		t.Error("empty example accepted")
	}
}
