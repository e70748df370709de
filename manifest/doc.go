// Package manifest is the artifacts contract (manifest.json): which graph files an
// artifacts directory holds, what each graph input and output means (by role), the LoRA
// parameters (LoRAParam), the quantized Linears and their error (QuantLayer), and the
// modulus the dropout_seed input is fed under (DropoutSeedModulus), and the size and SHA-256
// of the external data file (DataFile: ReadManifest refuses a size mismatch, VerifyHashes and
// VerifyHashesOnce a hash mismatch). `prepare` writes it
// (the passes in ortgraph/passes produce its LoRAParam and QuantLayer values) and `train`,
// `eval` and `bench` read it. It imports no ortq package, so that reading artifacts never
// links the graph rewriter and the contract stays one small file.
package manifest
