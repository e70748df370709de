package bench

import (
	"math/rand/v2"

	"github.com/ortq/ortq/data"
)

// Synthetic draws benchmark batches: every position a real token (attention mask all
// ones), labels = input ids, seeded. The stream is random but learnable — each token is,
// with probability 1/2, a fixed random successor of the previous one (a permutation of
// the vocabulary), else uniform — so a few optimizer steps lower eval perplexity
// measurably and `compare` can gate on it. Token values do not change the arithmetic,
// so throughput is that of any text.
type Synthetic struct {
	vocab int
	succ  []int64
	rng   *rand.Rand
}

// NewSynthetic creates a stream over ids [0, vocab). The successor table depends on seed
// only, so streams with different stream ids (train vs eval) share it.
func NewSynthetic(vocab int, seed, stream uint64) *Synthetic {
	perm := rand.New(rand.NewPCG(seed, 0x5eed)).Perm(vocab)
	succ := make([]int64, vocab)
	for i, p := range perm {
		succ[i] = int64(p)
	}
	return &Synthetic{vocab: vocab, succ: succ, rng: rand.New(rand.NewPCG(seed, stream+1))}
}

// Batch returns the next rows×seq batch.
func (s *Synthetic) Batch(rows, seq int) data.Batch {
	n := rows * seq
	ids := make([]int64, n)
	mask := make([]int64, n)
	for r := 0; r < rows; r++ {
		prev := int64(s.rng.IntN(s.vocab))
		for c := 0; c < seq; c++ {
			t := prev
			if c > 0 {
				if s.rng.IntN(2) == 0 {
					t = s.succ[prev]
				} else {
					t = int64(s.rng.IntN(s.vocab))
				}
			}
			ids[r*seq+c], mask[r*seq+c] = t, 1
			prev = t
		}
	}
	labels := append([]int64(nil), ids...)
	return data.Batch{Rows: rows, SeqLen: seq, InputIDs: ids, AttentionMask: mask, Labels: labels, Tokens: rows * (seq - 1)}
}
