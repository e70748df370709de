// Package data turns user text into the padded int64 micro-batches that the
// ortq training and evaluation graphs consume.
//
// The pipeline is deliberately split into small steps so the CLI can report
// and test each one:
//
//  1. ReadDocuments reads .txt files (one file = one document, or one line =
//     one document when ReadOptions.LinePerDocument is set for --pack none) and
//     JSONL files (one {"text": ...} object per line).
//  2. Build tokenizes documents through the Encoder interface (the tokenize
//     package plugs in here, so this package has no tokenizer dependency),
//     packs them into MaxSeqLen blocks joined with EOS (or truncates one
//     example per document with NoPack; with Isolate it marks where each
//     document starts, and batches then give the documents of a row their own
//     ids in the attention mask, positions from 0 and no label at a document's
//     first token, so none is trained to predict it from the one before), checks lengths against the model and
//     splits examples into seeded train/eval sets.
//  3. Iterator yields shuffled, padded micro-batches (Batch) epoch after
//     epoch; its Position (epoch, index, seed) is all a checkpoint has to
//     store for a resume to continue with exactly the same batches.
//
// Labels follow Hugging Face: labels equal input ids with -100 at padding, and
// the graph shifts them itself (logits[:, :-1] vs labels[:, 1:]). Batch.Tokens
// is the number of labels the loss actually counts after that shift, which is
// what token-weighted gradient accumulation divides by.
//
// Randomness uses a hand-rolled Fisher-Yates over math/rand/v2's PCG source
// (not rand.Shuffle) because PCG's output is a fixed, documented algorithm
// while the helpers built on it may change between Go releases; a checkpoint
// must replay the same order after a toolchain upgrade.
package data
