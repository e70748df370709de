package manifest

// The LoRA dropout masks of the training graphs are a pure function of a seed and the
// element's (row, column) (ortgraph/passes/dropout.go builds them). Part of that function is
// computed by the trainer: the row factors R, one int32 per token of the micro-batch, which
// the graphs read from their dropout_rows input. They are defined here, with the artifacts
// contract, so that the trainer and the graph builder agree without importing each other.

// dropoutMix is two rounds of multiply and square mod DropoutSeedModulus.
func dropoutMix(v int64) int64 {
	const P = DropoutSeedModulus
	v = v * 48271 % P
	v = (v*v + 12345) % P
	v = (v*69621 + 11) % P
	return (v*v + 777) % P
}

// DropoutMix is the hash's mixing function (exported for the graph builder's reference).
func DropoutMix(v int64) int64 { return dropoutMix(v) }

// DropoutFactor maps a residue h to the odd int32 8h + 1 − 2^31.
func DropoutFactor(h int64) int32 { return int32(8*h + 1 - 1<<31) }

// DropoutRowFactor is R[row] under seed (in [0, DropoutSeedModulus)): the factor of the
// micro-batch's row-major token index row.
func DropoutRowFactor(seed, row int64) int32 {
	const P = DropoutSeedModulus
	off := dropoutMix((seed*69069 + 1) % P)
	return DropoutFactor(dropoutMix((row + off) % P))
}

// DropoutRowFactors is the dropout_rows input for a micro-batch of n tokens.
func DropoutRowFactors(seed int64, n int) []int32 {
	const P = DropoutSeedModulus
	off := dropoutMix((seed*69069 + 1) % P)
	out := make([]int32, n)
	for r := range out {
		out[r] = DropoutFactor(dropoutMix((int64(r) + off) % P))
	}
	return out
}
