package data

import (
	"math/bits"
	"math/rand/v2"
)

// Stream tags keep the split and the per-epoch shuffles independent even
// though they share one user seed.
const (
	streamSplit uint64 = 0x73706c6974 // "split"
	streamEpoch uint64 = 0x65706f6368 // "epoch"
)

// splitmix64 scrambles seeds so that nearby (seed, stream) pairs start the
// PCG in unrelated states.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func newRand(seed, stream uint64) *rand.PCG {
	return rand.NewPCG(splitmix64(seed), splitmix64(seed^splitmix64(stream)))
}

// uint64n returns a uniform value in [0, n) (Lemire's multiply-shift with
// rejection); written here so the sequence is fixed by this code, not by a
// library helper that may change.
func uint64n(r *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(r.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(r.Uint64(), n)
		}
	}
	return hi
}

// permutation returns a Fisher-Yates shuffle of 0..n-1.
func permutation(n int, r *rand.PCG) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := int(uint64n(r, uint64(i+1)))
		p[i], p[j] = p[j], p[i]
	}
	return p
}
